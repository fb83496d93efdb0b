"""The per-patch targets of the auxiliary loss name what the scene shows in each grid cell."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tools import geometry
from training import patch_targets, scenes
from training.patch_targets import IGNORE, KINDS


def _scene(objects: tuple[scenes.ShapeObject, ...], word: scenes.Word | None = None, size: int = 200) -> scenes.Scene:
    return scenes.Scene(image=Image.new("RGB", (size, size), (230, 230, 230)), objects=objects, word=word)


def test_a_square_names_the_cells_it_covers_with_its_kind_colour_and_box() -> None:
    square = scenes.ShapeObject("square", "blue", (0, 0, 100, 100))  # the top-left quarter: cells 0..4 x 0..4
    targets = patch_targets.patch_targets(_scene((square,)), grid=10)
    kind = targets.kind.reshape(10, 10)
    assert (kind[:5, :5] == KINDS.index("square")).all()
    assert (kind[5:, :] == 0).all() and (kind[:, 5:] == 0).all()
    color = targets.color.reshape(10, 10)
    assert (color[:5, :5] == 1 + scenes.COLORS.index("blue")).all() and (color[5:, 5:] == 0).all()
    boxes = targets.box_bins.reshape(10, 10, 4)
    assert (boxes[:5, :5] == geometry.xyxy_to_bins((0, 0, 100, 100), width=200, height=200)).all()
    assert (boxes[5:, 5:] == IGNORE).all()
    assert (targets.letter == IGNORE).all()


def test_a_cell_belongs_to_the_shape_covering_most_of_it_and_slivers_are_background() -> None:
    left = scenes.ShapeObject("square", "red", (0, 0, 90, 200))  # covers cells of column 4 by half (80..90 of 80..100)
    right = scenes.ShapeObject("square", "green", (96, 0, 200, 200))  # covers column 4 by a fifth, 5.. fully
    targets = patch_targets.patch_targets(_scene((left, right)), grid=10)
    color = targets.color.reshape(10, 10)
    assert (color[:, :4] == 1 + scenes.COLORS.index("red")).all()
    assert (color[:, 4] == 1 + scenes.COLORS.index("red")).all()  # half beats a fifth
    assert (color[:, 5:] == 1 + scenes.COLORS.index("green")).all()
    thin = scenes.ShapeObject("square", "red", (0, 0, 5, 5))  # a quarter of one cell: under COVERED
    assert (patch_targets.patch_targets(_scene((thin,)), grid=10).kind == 0).all()


def test_the_word_cells_carry_its_letters_left_to_right() -> None:
    word = scenes.Word("ABCDE", (0, 80, 200, 120))  # the whole width, rows 4 and 5
    targets = patch_targets.patch_targets(_scene((), word), grid=10)
    kind = targets.kind.reshape(10, 10)
    assert (kind[4:6] == KINDS.index("word")).all() and (kind[:4] == 0).all()
    letters = targets.letter.reshape(10, 10)[4]
    assert letters[0] == 0 and letters[-1] == 4  # A at the left, E at the right
    assert (np.diff(letters) >= 0).all() and set(letters.tolist()) == {0, 1, 2, 3, 4}
    assert (targets.box_bins == IGNORE).all()


def test_generated_scenes_give_targets_for_every_shape_they_draw() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = scenes.make_scene(rng, kind="shapes", max_side=400)
        targets = patch_targets.patch_targets(scene, grid=10)
        assert set(targets.kind.tolist()) - {0} <= {1 + scenes.SHAPES.index(o.shape) for o in scene.objects}
        named = targets.kind != 0
        assert (targets.box_bins[named] != IGNORE).all() and (targets.box_bins[~named] == IGNORE).all()
