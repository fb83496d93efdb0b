"""The demo judges the words the model wrote, whichever tool wrote them."""

from __future__ import annotations

import pytest

import tools
from clients.demo import model_text

COMMON = {"image_width": 960, "image_height": 640, "model": "paligemma2-tiny-shapes"}


@pytest.mark.parametrize(
    ("result", "written"),
    [
        (tools.TextResult(**COMMON, prompt="ocr", raw_text="CAT", text="CAT"), "CAT"),
        (
            tools.AnswerResult(
                **COMMON, prompt="answer en what color is the circle?", raw_text="red",
                question="what color is the circle?", lang="en", answer="red",
            ),
            "red",
        ),
        (
            tools.CaptionResult(**COMMON, prompt="caption en", raw_text="a red circle", detail="short", lang="en",
                                caption="a red circle"),
            "a red circle",
        ),
        # the caller gave `answer`, the model wrote `question`: the demo once showed 'red' here
        (
            tools.QuestionResult(
                **COMMON, prompt="question en red", raw_text="what color is the circle?", answer="red", lang="en",
                question="what color is the circle?",
            ),
            "what color is the circle?",
        ),
        (tools.Detections(**COMMON, prompt="detect cat", raw_text="", objects=()), None),
    ],
)  # fmt: skip
def test_model_text_is_what_the_model_wrote(result: tools.ToolResult, written: str | None) -> None:
    assert model_text(result) == written
