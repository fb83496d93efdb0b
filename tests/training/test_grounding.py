"""The grounding loss looks, from each answer position about an object, at that object's cells."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from server.tiny_model import build_tokenizer
from training import tasks
from training.grounding import (
    GroundingSettings,
    answer_subjects,
    grounding_loss,
    grounding_targets,
    letter_cells,
    object_cells,
)
from training.prefix_lm import IGNORED_LABEL
from training.scenes import Scene, ShapeObject, Word, make_scene
from training.train_tiny import TRAINED_ARCHITECTURE, Batcher, Item

LOC = range(1000, 2024)
SEG = range(2024, 2152)
L, S = LOC.start, SEG.start  # a <loc> id and a <seg> id


def _at(positions: range, subject: int) -> list[tuple[int, tuple[int, ...]]]:
    return [(j, (subject,)) for j in positions]


GRID = TRAINED_ARCHITECTURE.image_size_px // TRAINED_ARCHITECTURE.patch_size_px  # the batches' grid of cells
CODES = {"circle": tuple(range(16)), "square": tuple(range(16, 32)), "triangle": tuple(range(32, 48))}


@pytest.mark.parametrize(
    ("task", "answer_ids", "subjects", "expected"),
    [
        # two boxes: each token from a box's first <loc> to the next box's (label, separator) is its box's
        ("detect", [L, L, L, L, 5, 6, L, L, L, L, 7, 1], (2, 0), [*_at(range(6), 2), *_at(range(6, 12), 0)]),
        # a mask: its 16 <seg> follow its four <loc>, then its label and <eos>
        ("segment", [L, L, L, L, *[S] * 16, 5, 1], (1,), _at(range(22), 1)),
        ("detect", [1], (), []),  # the name is absent: <eos> alone, nothing to look at
        ("count", [50, 1], (0, 2), [(0, (0, 2))]),  # a question: its first token, about all it counts
        ("exists", [51, 1], (), []),  # "no": nothing to look at
        ("detect", [L, L, L, L, 5, 6, L, L, L, L, 1], (3,), _at(range(6), 3)),  # more boxes than subjects
    ],
)
def test_answer_subjects(task: str, answer_ids: list[int], subjects: tuple[int, ...], expected: list[object]) -> None:
    assert answer_subjects(task, answer_ids, subjects, LOC) == expected


def _scene(*objects: ShapeObject, size: tuple[int, int] = (100, 100)) -> Scene:
    return Scene(image=Image.new("RGB", size, (250, 250, 250)), objects=objects, word=None)


def test_object_cells_are_the_cells_it_covers() -> None:
    scene = _scene(ShapeObject("square", "red", (0, 0, 50, 50)), ShapeObject("square", "blue", (80, 80, 86, 86)))
    cells = object_cells(scene, (0, 1), grid=10).reshape(2, 10, 10)
    assert cells[0, :5, :5].all() and cells[0].sum() == 25
    assert cells[1].sum() == 1 and cells[1, 8, 8]  # too small to cover 15 % of any cell: its largest cell


def test_every_subject_of_a_generated_example_is_looked_at_from_its_box_and_label() -> None:
    batcher = Batcher(build_tokenizer(), TRAINED_ARCHITECTURE, CODES)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        scene = make_scene(rng, kind="shapes", max_side=300)
        example = tasks.detect(rng, scene, CODES.__getitem__)
        batch = batcher.collate([Item(example, scene.image, scene)])
        used = batch["ground_used"][0].nonzero()[:, 0].tolist()
        labels = batch["labels"][0].tolist()
        predicts_loc = [p for p in range(len(labels) - 1) if labels[p + 1] in batcher.loc_range]
        starts = predicts_loc[::4]  # where each box's first <loc> is predicted
        assert len(starts) == len(example.subjects)
        answer_end = max(p for p in range(len(labels) - 1) if labels[p + 1] != IGNORED_LABEL) + 1
        assert used == list(range(starts[0], answer_end)) if starts else used == []
        for box, subject in enumerate(example.subjects):
            stretch = range(starts[box], starts[box + 1] if box + 1 < len(starts) else answer_end)
            expected = object_cells(scene, (subject,), GRID)[0]
            for p in stretch:  # its four <loc>, its label, and what follows it
                assert batch["ground_cells"][0, p].numpy().astype(bool).tolist() == expected.tolist()
        assert not used or used[0] == len(batcher.prefix_ids(example.prompt)) - 1  # the first box from `\n`
        checked += bool(example.subjects)
    assert checked > 20


def test_questions_name_their_subjects() -> None:
    scene = _scene(
        ShapeObject("circle", "red", (0, 0, 30, 30)),
        ShapeObject("square", "blue", (50, 0, 80, 30)),
        ShapeObject("circle", "green", (0, 50, 30, 80)),
    )
    rng = np.random.default_rng(0)
    for _ in range(30):
        example = tasks.count(rng, scene, CODES.__getitem__)
        counted = [scene.objects[i] for i in example.subjects]
        assert int(example.answer) == len(counted)
        assert "shapes" in example.prompt or all(o.shape in example.prompt for o in counted)
    color = tasks.color(rng, scene, CODES.__getitem__)
    assert color is not None and color.subjects == (1,) and color.answer == "blue"  # the only single shape


def test_the_loss_is_small_when_the_head_looks_at_the_target_and_large_when_not() -> None:
    import torch

    square = _scene(ShapeObject("square", "red", (0, 0, 50, 50)))
    targets = grounding_targets([(square, "count", 3, [50, 1], (0,))], 5, 10, LOC)
    assert targets.used[0].tolist() == [False, False, True, False, False]
    on_target = targets.cells[0, 2] / targets.cells[0, 2].sum()
    off_target = (1 - targets.cells[0, 2]) / (1 - targets.cells[0, 2]).sum()
    settings = GroundingSettings(layer=0, head=1)
    looks = [torch.zeros(1, 2, 5, 103) for _ in range(2)]
    looks[0][0, 1, 2, :100], looks[1][0, 1, 2, :100] = on_target, off_target
    near_zero = float(grounding_loss([looks[0]], targets.cells, targets.used, 100, settings))
    large = float(grounding_loss([looks[1]], targets.cells, targets.used, 100, settings))
    assert near_zero < 1e-3 and large > 9


def test_the_positions_of_a_box_look_at_its_object() -> None:
    square = _scene(ShapeObject("square", "red", (0, 0, 50, 50)))
    targets = grounding_targets([(square, "detect", 3, [L, L, L, L, 1], (0,))], 8, 10, LOC)
    assert targets.used[0].tolist() == [False, False, True, True, True, True, True, False]  # four <loc>, <eos>
    assert targets.cells[0, 2].reshape(10, 10)[0, 0] == 1.0 and targets.cells[0, 2].sum() < 100


def _word_scene(text: str, box: tuple[int, int, int, int], size: tuple[int, int] = (200, 200)) -> Scene:
    return Scene(image=Image.new("RGB", size, (250, 250, 250)), objects=(), word=Word(text, box))


def test_each_letter_covers_its_own_cells_left_to_right() -> None:
    cells = letter_cells(_word_scene("WIDE", (0, 80, 200, 120)), grid=10).reshape(4, 10, 10)
    assert cells.shape[0] == 4 and not cells[:, :4].any() and not cells[:, 6:].any()  # rows 4 and 5 only
    columns = [np.nonzero(c.any(axis=0))[0] for c in cells]
    assert columns[0][0] == 0 and columns[-1][-1] == 9  # W at the left edge, E at the right
    assert all(a[0] <= b[0] and a[-1] <= b[-1] for a, b in itertools.pairwise(columns))
    assert len(columns[1]) < len(columns[0])  # the font's I is narrower than its W
    tiny = letter_cells(_word_scene("ABC", (100, 100, 106, 104)), grid=10)
    assert (tiny.sum(axis=1) == 1).all()  # too small for 15 % of a cell: its largest cell
    assert letter_cells(_scene(ShapeObject("square", "red", (0, 0, 50, 50))), grid=10).shape == (0, 100)


def test_an_ocr_answer_looks_at_each_letter_as_it_spells_it() -> None:
    tokenizer = build_tokenizer()
    batcher = Batcher(tokenizer, TRAINED_ARCHITECTURE, CODES)
    rng = np.random.default_rng(5)
    for _ in range(10):
        scene = make_scene(rng, kind="word", max_side=400)
        example = tasks.ocr(rng, scene, CODES.__getitem__)
        batch = batcher.collate([Item(example, scene.image, scene)])
        assert scene.word is not None
        first = len(batcher.prefix_ids(example.prompt)) - 1  # `\n` predicts the first letter
        spelled = list(range(first, first + len(scene.word.text)))
        assert batch["ground_reading"][0].nonzero()[:, 0].tolist() == spelled
        assert batch["ground_used"][0].nonzero()[:, 0].tolist() == spelled  # not the `<eos>` after
        letters = letter_cells(scene, GRID)
        for j, p in enumerate(spelled):
            assert int(batch["labels"][0, p + 1]) == tokenizer.convert_tokens_to_ids(scene.word.text[j])
            assert batch["ground_cells"][0, p].numpy().astype(bool).tolist() == letters[j].tolist()


def test_reading_positions_are_scored_on_the_reading_head() -> None:
    import torch

    square = _scene(ShapeObject("square", "red", (0, 0, 50, 50)))
    targets = grounding_targets([(square, "count", 3, [50, 1], (0,))], 5, 10, LOC)
    on_target = targets.cells[0, 2] / targets.cells[0, 2].sum()
    off_target = (1 - targets.cells[0, 2]) / (1 - targets.cells[0, 2]).sum()
    looks = torch.zeros(1, 2, 5, 103)
    looks[0, 0, 2, :100], looks[0, 1, 2, :100] = off_target, on_target  # head 0 looks away, head 1 at it
    settings = GroundingSettings(layer=0, head=0, reading_head=1)
    reading = torch.zeros(1, 5, dtype=torch.bool)
    assert float(grounding_loss([looks], targets.cells, targets.used, 100, settings, reading)) > 9
    reading[0, 2] = True
    assert float(grounding_loss([looks], targets.cells, targets.used, 100, settings, reading)) < 1e-3
