"""The grounding loss: while the answer speaks of an object, one attention head looks at it.

The tiny model trained on the answers alone learned to locate shapes but not to look for the
one the prompt names (docs/tiny-model.md, "Where the answer looks"): its attention from the
answer to the image picked the same objects whatever the name. This loss supervises one head of one
text layer (`GroundingSettings`): at every answer position that predicts a token about a
particular object (the `<loc>` and `<seg>` tokens of each box, in the answer's order; the
first answer token of a question, for the objects it asks about), the head's attention over
the image tokens should fall on the cells that object covers. Likewise, at every position that
spells a letter of an `ocr` answer, a second head of the same layer should look at that letter's
cells. The targets come from the
scene's geometry (`Example.subjects`); the architecture is unchanged, and nothing of this
is saved in the checkpoint. Used by train-tiny's binding stage (`bind_names`, on by default):
with it the shipped model's head looks at the shape named and labels boxes by their shape;
without it the same steps barely bind (docs/tiny-model.md, "Labels that follow the shape").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.patch_targets import coverage, letter_edges
from training.scenes import Scene, object_mask

if TYPE_CHECKING:
    import torch


LOCATED_TASKS = ("detect", "segment")  # the answer writes the subjects' boxes, one after another
READ_TASKS = ("ocr",)  # the answer spells the word, one letter a token
COVERED = 0.15  # least share of a cell an object must cover to count as where it is


@dataclass(frozen=True)
class GroundingSettings:
    layer: int = 2  # text layer whose attention is supervised (0-based)
    head: int = 0  # looks at the objects
    reading_head: int = 1  # looks at the letter an `ocr` answer spells next (its own head: see grounding_loss)
    weight: float = 1.0  # of the grounding loss, in the binding stage (0 turns it off)


def object_cells(scene: Scene, subjects: Sequence[int], grid: int) -> np.ndarray:
    """(len(subjects), grid * grid) bool: the cells each subject covers (at least its largest cell)."""
    rows = []
    for index in subjects:
        share = coverage(object_mask(scene, scene.objects[index]), grid)
        rows.append((share >= COVERED) | (share == share.max()))
    return np.array(rows, dtype=bool).reshape(len(rows), grid * grid)


def letter_cells(scene: Scene, grid: int) -> np.ndarray:
    """(letters, grid * grid) bool: the cells each letter of the scene's word covers (at least its
    largest cell); a letter's span is its share of the word's box by the font's advances."""
    if scene.word is None:
        return np.zeros((0, grid * grid), dtype=bool)
    x0, y0, x1, y1 = scene.word.box_xyxy
    rights = letter_edges(scene.word.text, x0, x1)
    lefts = np.concatenate([[x0], rights[:-1]])
    rows = []
    for left, right in zip(lefts, rights, strict=True):
        mask = np.zeros((scene.height, scene.width), dtype=bool)
        mask[y0:y1, int(np.floor(left)) : max(int(np.floor(left)) + 1, int(np.ceil(right)))] = True
        share = coverage(mask, grid)
        rows.append((share >= COVERED) | (share == share.max()))
    return np.array(rows, dtype=bool)


def answer_subjects(
    task: str, answer_ids: Sequence[int], subjects: Sequence[int], loc_range: range
) -> list[tuple[int, tuple[int, ...]]]:
    """(answer position, subjects looked at) for the answer tokens that are about objects.

    Position j means the j-th answer token is predicted there (from position j - 1 in the row).
    `detect`/`segment`: every token from a box's first `<loc>` to the next box's belongs to that
    box (its four `<loc>`, its `<seg>`, its label and the separator or `<eos>` after it, in the
    order of `subjects`). A question: its first token, about all subjects.
    """
    if not subjects:
        return []
    if task not in LOCATED_TASKS:
        return [(0, tuple(subjects))]
    out: list[tuple[int, tuple[int, ...]]] = []
    locs = 0
    for j, token in enumerate(answer_ids):
        locs += token in loc_range
        box = (locs - 1) // 4
        if 0 <= box < len(subjects) and locs > 0:
            out.append((j, (subjects[box],)))
    return out


@dataclass(frozen=True)
class GroundingTargets:
    """Per row and position: the cells to look at (rows, length, cells) 0/1, which positions are
    supervised, and which of those spell a letter (rows, length) bool."""

    cells: torch.Tensor
    used: torch.Tensor
    reading: torch.Tensor


def grounding_targets(
    rows: Sequence[tuple[Scene, str, int, Sequence[int], Sequence[int]]],
    length: int,
    grid: int,
    loc_range: range,
) -> GroundingTargets:
    """For rows of (scene, task, prefix length, answer ids, subjects)."""
    import torch

    cells = np.zeros((len(rows), length, grid * grid), dtype=np.float32)
    reading = np.zeros((len(rows), length), dtype=bool)
    for i, (scene, task, prefix, answer_ids, subjects) in enumerate(rows):
        if task in READ_TASKS:
            letters = letter_cells(scene, grid)
            if len(letters) == len(answer_ids) - 1:  # one token per letter, then `<eos>`
                cells[i, prefix - 1 : prefix - 1 + len(letters)] = letters
                reading[i, prefix - 1 : prefix - 1 + len(letters)] = True
            continue
        at = answer_subjects(task, answer_ids, subjects, loc_range)
        if not at:
            continue
        covered = dict(zip(subjects, object_cells(scene, subjects, grid), strict=True))
        for j, looked_at in at:
            cells[i, prefix + j - 1] = np.any([covered[s] for s in looked_at], axis=0)
    targets = torch.from_numpy(cells)
    return GroundingTargets(targets, targets.sum(dim=-1) > 0, torch.from_numpy(reading))


def grounding_loss(
    attentions: Sequence[torch.Tensor],
    targets: torch.Tensor,
    supervised: torch.Tensor,
    image_tokens: int,
    settings: GroundingSettings,
    reading: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over supervised positions of -log(the head's attention on the target cells).

    Positions marked `reading` (rows, queries) are scored on `settings.reading_head`, the others
    on `settings.head`: sharing one head, reading pulled it off the objects and the boxes
    drifted (docs/tiny-model.md, "Reading").
    """
    import torch

    if not bool(supervised.any()):
        return attentions[0].new_zeros(())
    layer = attentions[settings.layer][..., :image_tokens]  # (rows, heads, queries, image keys)
    weights = layer[:, settings.head]
    if reading is not None:
        weights = torch.where(reading[..., None], layer[:, settings.reading_head], weights)
    on_target = (weights * targets).sum(dim=-1)[supervised]
    return -torch.log(on_target + 1e-4).mean()
