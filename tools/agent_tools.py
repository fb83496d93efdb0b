"""The tools as an LLM sees them: one typed source for OpenAI tools, the dispatcher and MCP.

Each tool is a pydantic model of its arguments (the JSON schema is derived from it, never
written by hand) plus the async function that runs it. Arguments an LLM may leave to the
default are nullable (`null` = the default), as OpenAI's strict mode requires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools import functions
from tools.client import PaliGemmaClient
from tools.models import (
    AnswerResult,
    CaptionResult,
    Detections,
    QuestionResult,
    Segments,
    TextResult,
    ToolResult,
)

IMAGE_DESCRIPTION = (
    "The image: a handle such as 'img_1' for an image already in the conversation (preferred), "
    "an http(s) URL, or a file path the host allows. Never paste base64 image data here."
)
LANG_DESCRIPTION = "Language code of the answer, e.g. 'en', 'de', 'fr', 'zh'. null means 'en'."
COORDINATES = (
    "Coordinates are pixels of the original image (as a person sees it, EXIF rotation applied): "
    "origin at the top-left corner, x to the right, y down; boxes are x_min, y_min, x_max, y_max. "
    "The result gives image_width and image_height."
)


class _Arguments(BaseModel):
    # strict: no coercion ("true" is not a boolean), as the JSON schema says. The one leniency:
    # a nullable argument may be left out, as LLMs without strict mode do, and means null.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    image: str = Field(description=IMAGE_DESCRIPTION)


class ReadTextArguments(_Arguments):
    """Arguments of read_text."""


class AnswerVisualQuestionArguments(_Arguments):
    """Arguments of answer_visual_question."""

    question: str = Field(description="One short question about the image, in plain words, one line.")
    lang: str | None = Field(default=None, description=LANG_DESCRIPTION)


class CaptionImageArguments(_Arguments):
    """Arguments of caption_image."""

    detail: Literal["short", "long"] | None = Field(
        default=None, description="'short' for a one-line caption, 'long' for a description. null means 'short'."
    )
    lang: str | None = Field(default=None, description=LANG_DESCRIPTION)


class GenerateQuestionArguments(_Arguments):
    """Arguments of generate_question."""

    answer: str = Field(description="The answer the generated question should have.")
    lang: str | None = Field(default=None, description=LANG_DESCRIPTION)


class LocateObjectsArguments(_Arguments):
    """Arguments of locate_objects."""

    objects: list[str] = Field(
        description="Names of the kinds of things to find, e.g. ['cat', 'traffic light']; 1 to 20 short names.",
        min_length=1,
        max_length=20,
    )


class SegmentObjectsArguments(_Arguments):
    """Arguments of segment_objects."""

    objects: list[str] = Field(
        description="Names of the kinds of things to outline, e.g. ['cat']; 1 to 20 short names.",
        min_length=1,
        max_length=20,
    )
    include_masks: bool | None = Field(
        default=None,
        description="true to also return each full mask as COCO RLE (large); null/false returns outlines only.",
    )


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what the LLM is told, its arguments and the functions that run it."""

    name: str
    description: str
    arguments: type[_Arguments]
    function: Callable[..., ToolResult]  # the sync tool function, image first
    afunction: Callable[..., Awaitable[ToolResult]]  # its async form
    keywords: Callable[[Any], dict[str, Any]]  # validated arguments -> the function's keyword arguments
    result: type[ToolResult]  # what it returns

    def run(self, arguments: _Arguments, image: Any, client: PaliGemmaClient) -> ToolResult:
        return self.function(image, client=client, **self.keywords(arguments))

    async def arun(self, arguments: _Arguments, image: Any, client: PaliGemmaClient) -> ToolResult:
        return await self.afunction(image, client=client, **self.keywords(arguments))


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "read_text",
        "Read the text written in an image (signs, documents, screenshots, labels) with PaliGemma OCR. "
        "Use it when the user needs the words in the image.",
        ReadTextArguments,
        functions.read_text,
        functions.aread_text,
        lambda a: {},
        TextResult,
    ),
    ToolSpec(
        "answer_visual_question",
        "Answer a short factual question about an image (what, how many, which colour, yes/no). "
        "Answers are short. For where things are, use locate_objects instead.",
        AnswerVisualQuestionArguments,
        functions.answer_visual_question,
        functions.aanswer_visual_question,
        lambda a: {"question": a.question, "lang": a.lang or "en"},
        AnswerResult,
    ),
    ToolSpec(
        "caption_image",
        "Describe an image: a one-line caption (detail 'short') or a longer description ('long'). "
        "Use it first when you do not know what the image shows.",
        CaptionImageArguments,
        functions.caption_image,
        functions.acaption_image,
        lambda a: {"detail": a.detail or "short", "lang": a.lang or "en"},
        CaptionResult,
    ),
    ToolSpec(
        "generate_question",
        "Generate a question about the image whose answer is the given text (for quizzes and data).",
        GenerateQuestionArguments,
        functions.generate_question,
        functions.agenerate_question,
        lambda a: {"answer": a.answer, "lang": a.lang or "en"},
        QuestionResult,
    ),
    ToolSpec(
        "locate_objects",
        "Find every instance of the named kinds of objects and return a labelled box for each. "
        f"Use it for where/how many/which is left of. {COORDINATES} An empty list means none found.",
        LocateObjectsArguments,
        functions.locate_objects,
        functions.alocate_objects,
        lambda a: {"objects": a.objects},
        Detections,
    ),
    ToolSpec(
        "segment_objects",
        "Outline the named objects precisely: a box, the outline polygon (GeoJSON-style rings in pixels, "
        f"simplified to 1 px) and the area in pixels of each. Slower than locate_objects. {COORDINATES}",
        SegmentObjectsArguments,
        functions.segment_objects,
        functions.asegment_objects,
        lambda a: {"objects": a.objects},
        Segments,
    ),
)
TOOLS_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}
