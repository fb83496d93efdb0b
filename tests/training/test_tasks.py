"""The answer conventions of the synthetic domain (docs/synthetic-domain.md), as table tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tools import parsing
from training import tasks
from training.scenes import Scene, ShapeObject, make_scene

RED_CIRCLE_LEFT = ShapeObject("circle", "red", (10, 40, 40, 70))
BLUE_SQUARE_MIDDLE = ShapeObject("square", "blue", (45, 5, 75, 35))
GREEN_CIRCLE_RIGHT = ShapeObject("circle", "green", (80, 60, 98, 78))
CODES = {"circle": tuple(range(16)), "square": tuple(range(16, 32)), "triangle": tuple(range(32, 48))}


def _scene(*objects: ShapeObject) -> Scene:
    return Scene(image=Image.new("RGB", (100, 100), (250, 250, 250)), objects=objects, word=None)


SCENE = _scene(GREEN_CIRCLE_RIGHT, BLUE_SQUARE_MIDDLE, RED_CIRCLE_LEFT)
ALL_THREE = [("circle", RED_CIRCLE_LEFT), ("square", BLUE_SQUARE_MIDDLE), ("circle", GREEN_CIRCLE_RIGHT)]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        # every object a name answers to, left to right by box centre, whatever the names' order
        (("square", "circle"), ALL_THREE),
        (("circle", "square"), ALL_THREE),
        (("circle",), [("circle", RED_CIRCLE_LEFT), ("circle", GREEN_CIRCLE_RIGHT)]),
        # a colour narrows the name; an object answering to two names is written once, as the first asked
        (("green circle",), [("green circle", GREEN_CIRCLE_RIGHT)]),
        (("red circle", "circle"), [("red circle", RED_CIRCLE_LEFT), ("circle", GREEN_CIRCLE_RIGHT)]),
        # absent names answer nothing
        (("triangle",), []),
        (("blue circle", "triangle"), []),
    ],
)
def test_named_objects_are_in_reading_order_labelled_as_asked(
    names: tuple[str, ...], expected: list[tuple[str, ShapeObject]]
) -> None:
    assert tasks.named_objects(SCENE, names) == expected


@pytest.mark.parametrize("seed", range(20))
def test_a_detect_answer_parses_back_to_the_named_objects_in_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, kind="shapes", max_side=400)
    example = tasks.detect(rng, scene, CODES.__getitem__)
    names = tuple(example.prompt.removeprefix("detect ").split(" ; "))
    found = parsing.parse_detections(example.answer, width=scene.width, height=scene.height, prompt=example.prompt)
    expected = tasks.named_objects(scene, names)
    assert [d.label for d in found.objects] == [name for name, _ in expected]
    for detection, (_, obj) in zip(found.objects, expected, strict=True):
        assert np.allclose(detection.box.xyxy, obj.box_xyxy, atol=max(scene.width, scene.height) / 1024 + 1)
    assert example.subjects == tuple(scene.objects.index(o) for _, o in expected)


@pytest.mark.parametrize("seed", range(10))
def test_detect_every_kind_names_each_shape_once_and_labels_each_box_with_its_own_shape(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, kind="shapes", max_side=400)
    example = tasks.detect_every_kind(rng, scene, CODES.__getitem__)
    names = example.prompt.removeprefix("detect ").split(" ; ")
    assert sorted(names) == ["circle", "square", "triangle"]
    found = parsing.parse_detections(example.answer, width=scene.width, height=scene.height, prompt=example.prompt)
    in_reading_order = tasks.reading_order(scene.objects)
    assert [d.label for d in found.objects] == [o.shape for o in in_reading_order]
    assert example.subjects == tuple(scene.objects.index(o) for o in in_reading_order)


def test_detect_every_kind_prompts_vary_in_order() -> None:
    rng = np.random.default_rng(0)
    scene = make_scene(rng, kind="shapes", max_side=400)
    prompts = {tasks.detect_every_kind(rng, scene, CODES.__getitem__).prompt for _ in range(40)}
    assert len(prompts) == 6  # every order of the three names


@pytest.mark.parametrize("builder", [tasks.detect, tasks.detect_one, tasks.segment])
def test_named_prompts_name_only_what_the_scene_holds(builder: tasks.Builder) -> None:
    """Where a scene holds shapes, every name asked is one of them, so the answer is never empty."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = make_scene(rng, kind="shapes", max_side=300)
        example = builder(rng, scene, CODES.__getitem__)
        assert example is not None and example.answer and example.subjects, example


def test_a_scene_without_shapes_is_asked_for_some_and_answers_nothing() -> None:
    rng = np.random.default_rng(4)
    blank = _scene()
    for _ in range(50):
        example = tasks.detect(rng, blank, CODES.__getitem__)
        assert example.prompt.startswith("detect ") and example.answer == "" and example.subjects == ()
