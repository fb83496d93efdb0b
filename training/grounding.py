"""The grounding loss: while the answer speaks of an object, one attention head looks at it.

The tiny model trained on the answers alone learned to locate shapes but not to look for the
one the prompt names (docs/tiny-model.md, "Where the answer looks"): its attention from the
answer to the image picked the same objects whatever the name. This loss supervises one head of one
text layer (`GroundingSettings`): at every answer position that predicts a token about a
particular object (the `<loc>` and `<seg>` tokens of each box, in the answer's order; the
first answer token of a question, for the objects it asks about), the head's attention over
the image tokens should fall on the cells that object covers. The targets come from the
scene's geometry (`Example.subjects`); the architecture is unchanged, and nothing of this
is saved in the checkpoint. Used by train-tiny's opt-in binding stage (`bind_names`), which
has not yet made the shipped model bind names (docs/tiny-model.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.patch_targets import IGNORE, KINDS, coverage
from training.scenes import COLORS, Scene, object_mask

if TYPE_CHECKING:
    import torch

    from server.tiny_model import TinyArchitecture

LOCATED_TASKS = ("detect", "segment")  # the answer writes the subjects' boxes, one after another
COVERED = 0.15  # least share of a cell an object must cover to count as where it is


@dataclass(frozen=True)
class GroundingSettings:
    layer: int = 2  # text layer whose attention is supervised (0-based)
    head: int = 0
    weight: float = 1.0  # of the grounding loss, in the binding stage (0 turns it off)
    # of NamePrototypes' loss, in the binding stage: off, since its first steps (a loss near 20 from
    # prototypes that start at random) undid the main stage's locating (docs/tiny-model.md)
    prototype_weight: float = 0.0


def object_cells(scene: Scene, subjects: Sequence[int], grid: int) -> np.ndarray:
    """(len(subjects), grid * grid) bool: the cells each subject covers (at least its largest cell)."""
    rows = []
    for index in subjects:
        share = coverage(object_mask(scene, scene.objects[index]), grid)
        rows.append((share >= COVERED) | (share == share.max()))
    return np.array(rows, dtype=bool).reshape(len(rows), grid * grid)


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
    """Per row and position: the cells to look at (rows, length, cells) 0/1 and which positions are
    supervised; the kind (index into KINDS) and colour (1 + index into COLORS) the position looks
    for, where the prompt names it (IGNORE elsewhere)."""

    cells: torch.Tensor
    used: torch.Tensor
    kind: torch.Tensor
    color: torch.Tensor


def grounding_targets(
    rows: Sequence[tuple[Scene, str, str, int, Sequence[int], Sequence[int]]],
    length: int,
    grid: int,
    loc_range: range,
) -> GroundingTargets:
    """For rows of (scene, task, prompt, prefix length, answer ids, subjects)."""
    import torch

    cells = np.zeros((len(rows), length, grid * grid), dtype=np.float32)
    kind = np.full((len(rows), length), IGNORE, dtype=np.int64)
    color = np.full((len(rows), length), IGNORE, dtype=np.int64)
    for i, (scene, task, prompt, prefix, answer_ids, subjects) in enumerate(rows):
        at = answer_subjects(task, answer_ids, subjects, loc_range)
        if not at:
            continue
        covered = dict(zip(subjects, object_cells(scene, subjects, grid), strict=True))
        for j, looked_at in at:
            position = prefix + j - 1
            cells[i, position] = np.any([covered[s] for s in looked_at], axis=0)
            objects = [scene.objects[s] for s in looked_at]
            if len({o.shape for o in objects}) == 1 and objects[0].shape in prompt:
                kind[i, position] = KINDS.index(objects[0].shape)
            if len({o.name for o in objects}) == 1 and objects[0].name in prompt:
                color[i, position] = 1 + COLORS.index(objects[0].color)
    targets = torch.from_numpy(cells)
    return GroundingTargets(targets, targets.sum(dim=-1) > 0, torch.from_numpy(kind), torch.from_numpy(color))


def grounding_loss(
    attentions: Sequence[torch.Tensor],
    targets: torch.Tensor,
    supervised: torch.Tensor,
    image_tokens: int,
    settings: GroundingSettings,
) -> torch.Tensor:
    """Mean over supervised positions of -log(the head's attention on the target cells)."""
    import torch

    if not bool(supervised.any()):
        return attentions[0].new_zeros(())
    weights = attentions[settings.layer][:, settings.head, :, :image_tokens]  # (rows, queries, image keys)
    on_target = (weights * targets).sum(dim=-1)[supervised]
    return -torch.log(on_target + 1e-4).mean()


class NamePrototypes:
    """One learned vector per kind of patch and per colour, against which the supervised head's keys
    on the image tokens and its queries at the answer positions are both scored.

    Binding a name to a shape needs the head's query to carry the name and its keys the kind of
    each patch, aligned. Each alone gets no gradient from the grounding loss while the other is
    absent (a bilinear start at a saddle): trained from scratch, or on from a model that located
    shapes, the head kept attending to every object whatever the name. Scoring keys (by what the
    patch shows) and queries (by what the prompt names) against the same vectors aligns them from
    the start; the vectors are not saved.
    """

    def __init__(self, head_dim: int, seed: int) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.kinds = torch.nn.Parameter(torch.randn(len(KINDS), head_dim, generator=generator))
        self.colors = torch.nn.Parameter(torch.randn(1 + len(COLORS), head_dim, generator=generator))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.kinds, self.colors]

    def loss(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        named_kind: torch.Tensor,
        named_color: torch.Tensor,
        patch_kind: torch.Tensor,
        patch_color: torch.Tensor,
        image_tokens: int,
    ) -> torch.Tensor:
        """Cross-entropy of the image keys against their patches' kind and colour and of the
        queries against the kind and colour named, all (rows, length, head_dim), after RoPE."""
        from torch.nn import functional

        image = keys[:, :image_tokens].reshape(-1, keys.shape[-1])
        total = functional.cross_entropy(image @ self.kinds.T, patch_kind.reshape(-1), ignore_index=IGNORE)
        total = total + functional.cross_entropy(image @ self.colors.T, patch_color.reshape(-1), ignore_index=IGNORE)
        for wanted, vectors in ((named_kind, self.kinds), (named_color, self.colors)):
            if bool((wanted != IGNORE).any()):
                picked = queries[wanted != IGNORE]
                total = total + functional.cross_entropy(picked @ vectors.T, wanted[wanted != IGNORE])
        return total


class HeadProbe:
    """The supervised head's queries and keys as its attention scores them (after RoPE), captured
    from one Gemma 2 attention layer's projections during the forward pass."""

    def __init__(self, attention: Any, head: int, arch: TinyArchitecture) -> None:
        self.attention = attention
        self.head = head
        self.arch = arch
        self._seen: dict[str, Any] = {}

    def attach(self) -> list[Any]:
        """Register the hooks (returns their handles, to remove)."""

        def keep(name: str) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
                self._seen[name] = output

            return hook

        def keep_rope(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            self._seen["rope"] = kwargs["position_embeddings"]

        return [
            self.attention.q_proj.register_forward_hook(keep("q")),
            self.attention.k_proj.register_forward_hook(keep("k")),
            self.attention.register_forward_pre_hook(keep_rope, with_kwargs=True),
        ]

    def rotated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, keys), each (rows, length, head_dim), of the head, as last seen."""
        import torch

        def rotate_half(x: torch.Tensor) -> torch.Tensor:  # RoPE's pairing of the two halves, as Gemma 2's
            first, second = x.chunk(2, dim=-1)
            return torch.cat((-second, first), dim=-1)

        arch, (cos, sin) = self.arch, self._seen["rope"]
        rows, length = self._seen["q"].shape[:2]
        query = self._seen["q"].view(rows, length, arch.text_heads, arch.head_dim)[:, :, self.head]
        group = self.head // (arch.text_heads // arch.text_kv_heads)
        key = self._seen["k"].view(rows, length, arch.text_kv_heads, arch.head_dim)[:, :, group]
        return query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin
