"""The synthetic domain keeps its specification (docs/synthetic-domain.md) and its seeds."""

from __future__ import annotations

import numpy as np
import pytest

from training import scenes


def test_a_seed_gives_the_same_scene() -> None:
    a = scenes.make_scene(np.random.default_rng(42))
    b = scenes.make_scene(np.random.default_rng(42))
    assert a.objects == b.objects and a.word == b.word
    assert a.image.tobytes() == b.image.tobytes()


@pytest.mark.parametrize("seed", range(40))
def test_scenes_keep_the_specification(seed: int) -> None:
    scene = scenes.make_scene(np.random.default_rng(seed))
    width, height = scene.image.size
    assert scenes.MIN_SIDE_PX <= min(width, height) and max(width, height) <= scenes.MAX_SIDE_PX
    assert 0.5 - 0.01 <= width / height <= 2.0 + 0.01
    assert scene.objects or scene.word
    assert len(scene.objects) <= scenes.MAX_OBJECTS
    short = min(width, height)
    boxes = [o.box_xyxy for o in scene.objects] + ([scene.word.box_xyxy] if scene.word else [])
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box_xyxy
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert scenes.SIZE_FRACTION[0] - 0.01 <= (x1 - x0) / short <= scenes.SIZE_FRACTION[1] + 0.01
        if obj.shape != "triangle":
            assert x1 - x0 == y1 - y0
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], "objects overlap"
    if scene.word:
        x0, _, x1, _ = scene.word.box_xyxy
        assert scenes.WORD_WIDTH_FRACTION[0] <= (x1 - x0) / width <= scenes.WORD_WIDTH_FRACTION[1]
        assert scene.word.text.isalpha() and scene.word.text.isupper() and 3 <= len(scene.word.text) <= 8


def test_shapes_are_drawn_in_their_colour_where_their_box_says() -> None:
    scene = scenes.make_scene(np.random.default_rng(3), kind="shapes", size=(600, 400))
    pixels = np.asarray(scene.image, dtype=np.int16)
    for obj in scene.objects:
        median = np.median(pixels[scenes.object_mask(scene, obj)], axis=0)
        slack = 3 * scenes.NOISE_SIGMA_MAX
        for value, (lo, hi) in zip(median, scenes.COLOR_RANGES[obj.color], strict=True):
            assert lo - slack <= value <= hi + slack, (obj, median)


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_shape_masks_fill_their_box(shape: scenes.Shape) -> None:
    mask = scenes.shape_mask(shape, 100, 100)
    expected_share = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[shape]
    assert mask.mean() == pytest.approx(expected_share, abs=0.03)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


def test_a_word_list_gives_the_words_of_its_share_and_keeps_the_domain() -> None:
    word_list = scenes.WordList(("HELLO", "VISION", "CAT"), share=0.5)
    words = [scenes.make_scene(np.random.default_rng(seed), kind="word", word_list=word_list) for seed in range(60)]
    listed = [s for s in words if s.word is not None and s.word.text in word_list.words]
    assert 15 <= len(listed) <= 45  # about half; the rest random letters
    for scene in words:
        assert scene.word is not None
        x0, _, x1, _ = scene.word.box_xyxy
        assert scenes.WORD_WIDTH_FRACTION[0] <= (x1 - x0) / scene.width <= scenes.WORD_WIDTH_FRACTION[1]
    every = scenes.WordList(("HELLO",))
    assert scenes.make_scene(np.random.default_rng(5), kind="mixed", word_list=every).word.text == "HELLO"  # type: ignore[union-attr]


def test_no_word_list_draws_the_scenes_it_always_drew() -> None:
    """The held-out scenes of docs/benchmarks.md stay the same scenes."""
    a = scenes.make_scene(np.random.default_rng(1_000_003))
    b = scenes.make_scene(np.random.default_rng(1_000_003), word_list=None)
    assert a.image.tobytes() == b.image.tobytes()
