"""Running the tasks of tools/tasks.py: `run_task` for any of them, and one typed function per task.

Sync and async runs share every step but the request: build the prompt (bad options fail
here, before any work), load and encode the image, ask the endpoint (blocking or awaited),
read the answer into the task's result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from tools import prompts
from tools.client import PaliGemmaClient
from tools.errors import InvalidInputError
from tools.images import EncodedImage, ImageSource, LoadedImage, encode_for_model, load_image
from tools.models import (
    AnswerResult,
    CaptionResult,
    Detections,
    QuestionResult,
    Segments,
    TextResult,
    ToolResult,
)
from tools.tasks import (
    ANSWER_VISUAL_QUESTION,
    CAPTION_IMAGE,
    GENERATE_QUESTION,
    LOCATE_OBJECTS,
    READ_TEXT,
    SEGMENT_OBJECTS,
    TASKS_BY_NAME,
    Options,
    Reply,
    Task,
)

OptionsT = TypeVar("OptionsT", bound=Options)
ResultT = TypeVar("ResultT", bound=ToolResult)
Client = PaliGemmaClient | None
Extra = Mapping[str, Any] | None


@functools.cache
def default_client() -> PaliGemmaClient:
    """The client built from the environment, created on first use."""
    return PaliGemmaClient()


def _prepare(image: ImageSource, client: PaliGemmaClient) -> tuple[LoadedImage, EncodedImage]:
    loaded = load_image(image, client.image_policy)  # a bad image is refused before any request
    return loaded, encode_for_model(loaded, min_side_px=client.send_side_px(client.model()))


async def _aprepare(image: ImageSource, client: PaliGemmaClient) -> tuple[LoadedImage, EncodedImage]:
    loaded = await asyncio.to_thread(load_image, image, client.image_policy)
    side = client.send_side_px(await client.amodel())
    return loaded, await asyncio.to_thread(encode_for_model, loaded, min_side_px=side)


def run_task(
    task: Task[OptionsT, ResultT],
    image: ImageSource,
    options: OptionsT,
    *,
    client: Client = None,
    extra_body: Extra = None,
) -> ResultT:
    """Run `task` of the registry on `image` with `options`; raises the tools' PaliGemmaError subclasses."""
    prompt, max_tokens = _registered(task).request(options)
    client = client or default_client()
    with client.limit():  # decoding counts against the concurrency limit, like the request
        loaded, encoded = _prepare(image, client)
        completion = client.complete(encoded, prompt, max_tokens=max_tokens, extra_body=extra_body)
        return task.read(options, Reply(prompt, completion, loaded, client))


def _registered(task: object) -> Task[Any, Any]:
    """`task` itself when it is one of the registry's, else an error saying how to name one."""
    if isinstance(task, Task):
        return task
    hint = f" (TASKS_BY_NAME[{task!r}])" if isinstance(task, str) and task in TASKS_BY_NAME else ""
    raise InvalidInputError(
        f"run_task takes a Task of tools.tasks.TASKS{hint}, not {type(task).__name__} {str(task)[:80]!r}; "
        f"the tasks: {', '.join(TASKS_BY_NAME)}."
    )


async def arun_task(
    task: Task[OptionsT, ResultT],
    image: ImageSource,
    options: OptionsT,
    *,
    client: Client = None,
    extra_body: Extra = None,
) -> ResultT:
    """The async `run_task`: decoding images and masks (CPU work) runs off the event loop."""
    prompt, max_tokens = _registered(task).request(options)
    client = client or default_client()
    async with client.alimit():
        loaded, encoded = await _aprepare(image, client)
        completion = await client.acomplete(encoded, prompt, max_tokens=max_tokens, extra_body=extra_body)
        return await asyncio.to_thread(task.read, options, Reply(prompt, completion, loaded, client))


# --- one typed function per task -------------------------------------------------------------
def read_text(image: ImageSource, *, client: Client = None, extra_body: Extra = None) -> TextResult:
    """Read the text in an image (PaliGemma prompt `ocr`, which takes no language: it reads any script)."""
    return run_task(READ_TEXT, image, READ_TEXT.given(), client=client, extra_body=extra_body)


async def aread_text(image: ImageSource, *, client: Client = None, extra_body: Extra = None) -> TextResult:
    """Async `read_text`."""
    return await arun_task(READ_TEXT, image, READ_TEXT.given(), client=client, extra_body=extra_body)


def answer_visual_question(
    image: ImageSource, question: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> AnswerResult:
    """Answer a question about an image (prompt `answer {lang} {question}`)."""
    options = ANSWER_VISUAL_QUESTION.given(question=question, lang=lang)
    return run_task(ANSWER_VISUAL_QUESTION, image, options, client=client, extra_body=extra_body)


async def aanswer_visual_question(
    image: ImageSource, question: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> AnswerResult:
    """Async `answer_visual_question`."""
    options = ANSWER_VISUAL_QUESTION.given(question=question, lang=lang)
    return await arun_task(ANSWER_VISUAL_QUESTION, image, options, client=client, extra_body=extra_body)


def caption_image(
    image: ImageSource,
    *,
    detail: Literal["short", "long"] = "short",
    lang: str = "en",
    client: Client = None,
    extra_body: Extra = None,
) -> CaptionResult:
    """Caption an image: `short` (prompt `caption {lang}`) or `long` (`describe {lang}`)."""
    options = CAPTION_IMAGE.given(detail=detail, lang=lang)
    return run_task(CAPTION_IMAGE, image, options, client=client, extra_body=extra_body)


async def acaption_image(
    image: ImageSource,
    *,
    detail: Literal["short", "long"] = "short",
    lang: str = "en",
    client: Client = None,
    extra_body: Extra = None,
) -> CaptionResult:
    """Async `caption_image`."""
    options = CAPTION_IMAGE.given(detail=detail, lang=lang)
    return await arun_task(CAPTION_IMAGE, image, options, client=client, extra_body=extra_body)


def generate_question(
    image: ImageSource, answer: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> QuestionResult:
    """Generate a question about the image whose answer is `answer` (prompt `question {lang} {answer}`)."""
    options = GENERATE_QUESTION.given(answer=answer, lang=lang)
    return run_task(GENERATE_QUESTION, image, options, client=client, extra_body=extra_body)


async def agenerate_question(
    image: ImageSource, answer: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> QuestionResult:
    """Async `generate_question`."""
    options = GENERATE_QUESTION.given(answer=answer, lang=lang)
    return await arun_task(GENERATE_QUESTION, image, options, client=client, extra_body=extra_body)


def locate_objects(
    image: ImageSource, objects: str | Iterable[str], *, client: Client = None, extra_body: Extra = None
) -> Detections:
    """Find objects and return their boxes in pixels (prompt `detect a ; b`)."""
    options = LOCATE_OBJECTS.given(objects=list(prompts.split_objects(objects)))
    return run_task(LOCATE_OBJECTS, image, options, client=client, extra_body=extra_body)


async def alocate_objects(
    image: ImageSource, objects: str | Iterable[str], *, client: Client = None, extra_body: Extra = None
) -> Detections:
    """Async `locate_objects`."""
    options = LOCATE_OBJECTS.given(objects=list(prompts.split_objects(objects)))
    return await arun_task(LOCATE_OBJECTS, image, options, client=client, extra_body=extra_body)


def segment_objects(
    image: ImageSource,
    objects: str | Iterable[str],
    *,
    decode_masks: bool = True,
    client: Client = None,
    extra_body: Extra = None,
) -> Segments:
    """Outline objects: boxes, mask codes and decoded masks (prompt `segment a ; b`)."""
    options = SEGMENT_OBJECTS.given(objects=list(prompts.split_objects(objects)), decode_masks=decode_masks)
    return run_task(SEGMENT_OBJECTS, image, options, client=client, extra_body=extra_body)


async def asegment_objects(
    image: ImageSource,
    objects: str | Iterable[str],
    *,
    decode_masks: bool = True,
    client: Client = None,
    extra_body: Extra = None,
) -> Segments:
    """Async `segment_objects`."""
    options = SEGMENT_OBJECTS.given(objects=list(prompts.split_objects(objects)), decode_masks=decode_masks)
    return await arun_task(SEGMENT_OBJECTS, image, options, client=client, extra_body=extra_body)
