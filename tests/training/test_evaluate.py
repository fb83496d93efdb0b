"""The accuracy figures of the tiny-model benchmark, on answers whose right share is known."""

from __future__ import annotations

import pytest
from PIL import Image

from tools import prompts
from tools.models import CaptionResult, QuestionResult, TextResult
from training import evaluate
from training.scenes import Scene, ShapeObject, Word


@pytest.mark.parametrize(
    ("expected", "read", "exact", "letters", "short", "long"),
    [
        (["ABC", "WORD"], ["ABC", "WORD"], 1.0, 1.0, 1.0, 0.0),
        (["ABC", "WORD"], ["ABX", "WORDS"], 0.0, 6 / 7, 0.0, 0.0),  # a wrong letter; a letter too many
        (["ABCD"], ["BCD"], 0.0, 0.0, 0.0, 0.0),  # a skipped first letter: none at its place
        (["ABCD"], [""], 0.0, 0.0, 0.0, 0.0),
        (["ABCDE", "ABCDEF", "ABCDEFGH"], ["ABCDE", "ABCDEF", "ABCDEFG"], 2 / 3, 18 / 19, 1.0, 0.5),
    ],
)
def test_ocr_is_scored_by_word_by_length_and_by_letter_at_its_place(
    expected: list[str], read: list[str], exact: float, letters: float, short: float, long: float
) -> None:
    held_out = [Scene(Image.new("RGB", (100, 50), (240, 240, 240)), (), Word(w, (10, 10, 90, 30))) for w in expected]
    requests = [evaluate.Request(i, "ocr", prompts.ocr(), expected=w) for i, w in enumerate(expected)]
    results = [TextResult(image_width=100, image_height=50, prompt="ocr", model="m", raw_text=r, text=r) for r in read]
    figures = evaluate.score(held_out, requests, results, input_size_px=224)
    assert figures["OCR exact"] == pytest.approx(exact)
    assert figures["OCR letters at their place"] == pytest.approx(letters)
    assert figures[f"OCR exact, {evaluate.SHORT_WORDS}"] == pytest.approx(short)
    assert figures[f"OCR exact, {evaluate.LONG_WORDS}"] == pytest.approx(long)


@pytest.mark.parametrize(
    ("word", "box_xyxy", "image_width", "input_size_px", "width_px", "kind"),
    [
        ("ABCDEFGH", (0, 0, 40, 10), 100, 224, 11.2, evaluate.NARROW_LETTERS),  # 8 letters over 40 %
        ("ABCD", (0, 0, 40, 10), 100, 224, 22.4, evaluate.MIDDLE_LETTERS),
        ("ABCD", (0, 0, 40, 10), 100, 448, 44.8, evaluate.WIDE_LETTERS),  # the same word, twice the input
        ("ABC", (500, 0, 1400, 10), 2000, 224, 33.6, evaluate.WIDE_LETTERS),  # 45 % of a wide image
    ],
)
def test_ocr_is_scored_by_the_width_of_the_letters_where_the_model_sees_them(
    word: str, box_xyxy: tuple[int, int, int, int], image_width: int, input_size_px: int, width_px: float, kind: str
) -> None:
    scene = Scene(Image.new("RGB", (image_width, 50), (240, 240, 240)), (), Word(word, box_xyxy))
    assert evaluate.letter_width_px(scene, input_size_px) == pytest.approx(width_px)
    request = evaluate.Request(0, "ocr", prompts.ocr(), expected=word)
    right = TextResult(image_width=image_width, image_height=50, prompt="ocr", model="m", raw_text=word, text=word)
    figures = evaluate.score([scene], [request], [right], input_size_px=input_size_px)
    widths = (evaluate.NARROW_LETTERS, evaluate.MIDDLE_LETTERS, evaluate.WIDE_LETTERS)
    assert [figures[f"OCR exact, {w}"] for w in widths] == [float(w == kind) for w in widths]


@pytest.mark.parametrize(
    ("word", "kinds"),
    [
        ("ABC", []),
        ("LIAR", [evaluate.WITH_AN_I]),
        ("APPLE", [evaluate.WITH_DOUBLED]),
        ("TIIZ", [evaluate.WITH_AN_I, evaluate.WITH_DOUBLED]),
        ("ABAB", []),  # twice, but not in a row
    ],
)
def test_ocr_is_scored_by_the_letters_read_wrong_most(word: str, kinds: list[str]) -> None:
    assert evaluate.misread_kinds(word) == kinds
    scene = Scene(Image.new("RGB", (100, 50), (240, 240, 240)), (), Word(word, (10, 10, 90, 30)))
    request = evaluate.Request(0, "ocr", prompts.ocr(), expected=word)
    wrong = TextResult(image_width=100, image_height=50, prompt="ocr", model="m", raw_text="X", text="X")
    figures = evaluate.score(
        [scene, scene], [request, request], [wrong, wrong.model_copy(update={"text": word})], input_size_px=224
    )
    for kind in (evaluate.WITH_AN_I, evaluate.WITH_DOUBLED):
        assert figures[f"OCR exact, {kind}"] == (0.5 if kind in kinds else 0.0)


@pytest.mark.parametrize(
    ("described", "asked", "description", "question"),
    [
        ("a red circle at the top left and a blue square at the bottom right", "what color is the square?", 1.0, 1.0),
        ("a red circle at the top left", "what color is the circle?", 0.0, 0.0),  # a shape left out; the wrong one
    ],
)
def test_descriptions_and_generated_questions_are_scored_by_what_the_model_wrote(
    described: str, asked: str, description: float, question: float
) -> None:
    objects = (ShapeObject("circle", "red", (0, 0, 20, 20)), ShapeObject("square", "blue", (70, 30, 100, 50)))
    scene = Scene(Image.new("RGB", (100, 50), (240, 240, 240)), objects, None)
    requests = [r for r in evaluate.requests_for(0, scene) if r.task in ("describe", "question")]
    assert [(r.prompt, r.subject, r.expected) for r in requests] == [
        ("describe en", "", "a red circle at the top left and a blue square at the bottom right"),
        ("question en blue", "blue", "what color is the square?"),  # scene 0: the first of the sorted colours
    ]
    common = {"image_width": 100, "image_height": 50, "model": "m", "lang": "en"}
    results = [
        CaptionResult(**common, prompt="describe en", raw_text=described, detail="long", caption=described),
        QuestionResult(**common, prompt="question en blue", raw_text=asked, answer="blue", question=asked),
    ]
    figures = evaluate.score([scene], requests, results, input_size_px=224)
    assert (figures["description exact"], figures["generated question exact"]) == (description, question)


def test_the_word_scenes_hold_held_out_words_and_are_scored_by_word() -> None:
    from training import common_words

    common = evaluate.common_word_scenes(20)
    checks = evaluate.check_word_scenes(2)
    assert all(s.word is not None and s.word.text in common_words.held_out_words() for s in common)
    assert [s.word.text for s in checks if s.word is not None] == [w for w in common_words.CHECK_WORDS for _ in "ab"]
    assert not {s.word.text for s in common + checks if s.word is not None} & set(common_words.training_words())
    assert [s.image.tobytes() for s in evaluate.common_word_scenes(3)] == [s.image.tobytes() for s in common[:3]]
    requests = evaluate.ocr_requests(checks[:4])
    read = ["HELLO", "HELO", "WORLD", " WORLD "]
    results = [TextResult(image_width=1, image_height=1, prompt="ocr", model="m", raw_text=r, text=r) for r in read]
    assert evaluate.ocr_exact(requests, results) == pytest.approx(3 / 4)
