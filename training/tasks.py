"""PaliGemma task examples (prompt, answer) for a synthetic scene, with the prompts the tools send.

Prompts come from `tools.prompts` and `<loc>`/`<seg>` answers from `tools.answer_text`, the
same code the tools build and parse with. The answers follow fixed conventions so a model
can learn them (docs/synthetic-domain.md): objects left to right by box centre, labels
as asked, numbers as digits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from tools import answer_text, geometry, prompts
from training.scenes import COLORS, SHAPES, Scene, ShapeObject

TASK_WEIGHTS: Final[dict[str, float]] = {
    "detect": 0.2,
    "detect_every_kind": 0.16,
    "segment": 0.15,
    "ocr": 0.12,
    "caption": 0.05,
    "describe": 0.03,
    "count": 0.12,
    "color": 0.08,
    "exists": 0.06,
    "question": 0.03,
}
NUMBER_WORDS: Final = ("0", "1", "2", "3")


@dataclass(frozen=True)
class Example:
    """A prompt and its answer; `subjects` are the indices (into the scene's objects) of what the
    answer is about: for `detect` and `segment` the objects whose boxes it writes, in its order;
    for a question, the objects the question asks about. Training looks at them
    (training.grounding); the answer text does not depend on them."""

    task: str
    prompt: str
    answer: str
    subjects: tuple[int, ...] = ()


CodesFor = Callable[[str], Sequence[int]]  # shape name -> its 16 mask codes
Builder = Callable[[np.random.Generator, Scene, CodesFor], Example | None]  # one task's examples


def reading_order(objects: Sequence[ShapeObject]) -> list[ShapeObject]:
    """Objects left to right by box centre (top to bottom where centres tie)."""
    return sorted(objects, key=lambda o: (o.box_xyxy[0] + o.box_xyxy[2], o.box_xyxy[1] + o.box_xyxy[3]))


def matches(obj: ShapeObject, name: str) -> bool:
    """Whether an object answers to `name`: a shape ("circle") or a colour and shape ("red circle")."""
    return name in (obj.shape, obj.name)


def object_bins(scene: Scene, obj: ShapeObject) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = obj.box_xyxy
    return geometry.xyxy_to_bins((x0, y0, x1, y1), width=scene.width, height=scene.height)


def _names(rng: np.random.Generator, scene: Scene, most: int) -> tuple[str, ...]:
    """1..most distinct names of objects in the scene (of any shape where it holds none).

    Never an absent name beside present objects: the model cannot tell a named shape's absence
    before its first answer token, so such examples only taught it to hedge with `<eos>`, and a
    one-name prompt whose shape was there answered nothing (docs/tiny-model.md, "Answers that
    do not hedge"). Absence is taught where it can be seen: `detect_every_kind` leaves out the
    kinds a scene lacks, and scenes without shapes answer nothing.
    """
    count = int(rng.integers(1, most + 1))
    present = [o.shape if rng.random() < 0.5 else o.name for o in scene.objects]
    names: list[str] = []
    for _ in range(count * 4):
        if len(names) == count:
            break
        if present:
            name = present[int(rng.integers(len(present)))]
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            name = shape if rng.random() < 0.5 else f"{COLORS[int(rng.integers(len(COLORS)))]} {shape}"
        if name not in names:
            names.append(name)
    return tuple(names)


def named_objects(scene: Scene, names: Sequence[str]) -> list[tuple[str, ShapeObject]]:
    """(name, object) in answer order: every object that answers to a name, in reading order,
    labelled with the first name (as asked) it answers to."""
    named = ((next((n for n in names if matches(o, n)), None), o) for o in reading_order(scene.objects))
    return [(name, o) for name, o in named if name is not None]


def _indices(scene: Scene, objects: Sequence[ShapeObject]) -> tuple[int, ...]:
    return tuple(scene.objects.index(o) for o in objects)


def _detection(scene: Scene, names: tuple[str, ...]) -> Example:
    named = named_objects(scene, names)
    found = [(name, object_bins(scene, o)) for name, o in named]
    subjects = _indices(scene, [o for _, o in named])
    return Example("detect", prompts.detect(names), answer_text.detection_text(found), subjects)


def detect(rng: np.random.Generator, scene: Scene, codes_for: CodesFor, most_names: int = 3) -> Example:
    return _detection(scene, _names(rng, scene, most_names))


def detect_one(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    """`detect` of one name: where two kinds of shape share the scene, only the name says which box."""
    return detect(rng, scene, codes_for, most_names=1)


def detect_every_kind(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    """`detect` naming every kind of shape in a random order, as a caller who wants everything
    asks: each box is labelled with its own shape, so the label comes from what is in the box,
    not from the prompt's order (most `detect` prompts name only what the scene holds, where
    "the first name asked" is too often right)."""
    return _detection(scene, tuple(str(n) for n in rng.permutation(SHAPES)))


def segment(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    names = _names(rng, scene, 2 if rng.random() < 0.2 else 1)
    named = named_objects(scene, names)
    found = [(name, object_bins(scene, o), codes_for(o.shape)) for name, o in named]
    subjects = _indices(scene, [o for _, o in named])
    return Example("segment", prompts.segment(names), answer_text.segment_text(found), subjects)


def ocr(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    return Example("ocr", prompts.ocr(), scene.word.text if scene.word else "")


def caption_text(scene: Scene) -> str:
    """`a red circle, a blue square and the word CAT`: objects in reading order, then the word."""
    parts = [f"a {o.name}" for o in reading_order(scene.objects)]
    if scene.word:
        parts.append(f"the word {scene.word.text}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _place(scene: Scene, box: tuple[int, int, int, int]) -> str:
    cx = (box[0] + box[2]) / 2 / scene.width
    cy = (box[1] + box[3]) / 2 / scene.height
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return " ".join(p for p in (row, col) if p) or "center"


def describe_text(scene: Scene) -> str:
    """`a red circle at the top left and the word CAT at the bottom`: the caption with places."""
    parts = [f"a {o.name} at the {_place(scene, o.box_xyxy)}" for o in reading_order(scene.objects)]
    if scene.word:
        parts.append(f"the word {scene.word.text} at the {_place(scene, scene.word.box_xyxy)}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    return Example("caption", prompts.caption("short", "en"), caption_text(scene))


def describe(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    return Example("describe", prompts.caption("long", "en"), describe_text(scene))


def count(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    if rng.random() < 0.25:
        question, counted = "how many shapes are there?", list(scene.objects)
    else:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        question, counted = f"how many {shape}s are there?", [o for o in scene.objects if o.shape == shape]
    return Example("count", prompts.answer(question, "en"), NUMBER_WORDS[len(counted)], _indices(scene, counted))


def _unique(scene: Scene, key: Callable[[ShapeObject], str]) -> dict[str, ShapeObject]:
    seen: dict[str, list[ShapeObject]] = {}
    for obj in scene.objects:
        seen.setdefault(key(obj), []).append(obj)
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def color(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example | None:
    single = _unique(scene, lambda o: o.shape)
    if not single:
        return None
    shape = sorted(single)[int(rng.integers(len(single)))]
    question = prompts.answer(color_question(shape), "en")
    return Example("color", question, single[shape].color, _indices(scene, [single[shape]]))


def exists(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    found = [o for o in scene.objects if o.shape == shape]
    question = prompts.answer(f"is there a {shape}?", "en")
    return Example("exists", question, "yes" if found else "no", _indices(scene, found))


def askable_colors(scene: Scene) -> dict[str, ShapeObject]:
    """The colours `question en COLOR` can be asked with, sorted: each the colour of exactly one
    shape, the only one of its kind (so `what color is the SHAPE?` has that colour as answer)."""
    by_color = _unique(scene, lambda o: o.color)
    by_shape = _unique(scene, lambda o: o.shape)
    return {c: o for c, o in sorted(by_color.items()) if o.shape in by_shape}


def color_question(shape: str) -> str:
    """`what color is the SHAPE?`: the question `answer en` asks and `question en COLOR` answers with."""
    return f"what color is the {shape}?"


def question(rng: np.random.Generator, scene: Scene, codes_for: CodesFor) -> Example | None:
    """`question en red` -> `what color is the square?` where exactly one shape, the only one of its kind, is red."""
    asked = askable_colors(scene)
    if not asked:
        return None
    chosen = list(asked)[int(rng.integers(len(asked)))]
    asked_about = asked[chosen]
    return Example(
        "question", prompts.question(chosen, "en"), color_question(asked_about.shape), _indices(scene, [asked_about])
    )


# The binding stage's tasks (training.train_tiny.bind_names), on scenes of two or three kinds of
# shape, each answer depending on which shape is where: boxes labelled by their own shape, one
# name among several kinds (its boxes, its masks), a count, a colour.
BINDING_WEIGHTS: Final[dict[str, float]] = {
    "detect_every_kind": 0.4,
    "detect_one": 0.1,
    "segment": 0.2,
    "count": 0.15,
    "color": 0.15,
}
# The speaking stage's mix (training.train_tiny.speak): the tasks that answer in words rather
# than `<loc>`s, which the binding, reading and settling stages leave to about one batch in a
# hundred each, and the kinds of detection that name every shape.
SPEAKING_WEIGHTS: Final[dict[str, float]] = {
    "caption": 0.3,
    "describe": 0.2,
    "question": 0.2,
    "detect_every_kind": 0.1,
    "count": 0.1,
    "color": 0.1,
}
BUILT_AS: Final[dict[str, str]] = {
    "detect_one": "detect",
    "detect_every_kind": "detect",
}  # builder name -> the task of its examples

_BUILDERS: Final[dict[str, Builder]] = {
    "detect": detect,
    "detect_one": detect_one,
    "detect_every_kind": detect_every_kind,
    "segment": segment,
    "ocr": ocr,
    "caption": caption,
    "describe": describe,
    "count": count,
    "color": color,
    "exists": exists,
    "question": question,
}


def example_for(rng: np.random.Generator, scene: Scene, codes_for: CodesFor, task: str | None = None) -> Example:
    """One example of `task` (or of a task drawn by TASK_WEIGHTS that fits the scene)."""
    names = list(TASK_WEIGHTS)
    weights = np.array([TASK_WEIGHTS[n] for n in names])
    if scene.word is not None and not scene.objects:
        weights = np.array([0.6 if n == "ocr" else w * 0.4 for n, w in zip(names, weights, strict=True)])
    if scene.word is None:
        weights = np.array([0.0 if n == "ocr" else w for n, w in zip(names, weights, strict=True)])
    for _ in range(20):
        chosen = task or names[int(rng.choice(len(names), p=weights / weights.sum()))]
        example = _BUILDERS[chosen](rng, scene, codes_for)
        if example is not None:
            return example
    return detect(rng, scene, codes_for)
