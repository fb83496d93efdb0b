"""The vision tools: one function per PaliGemma 2 task, each in a sync and an async form.

Both forms run the same three steps: load and encode the image, ask the endpoint, turn
the answer into a typed result. Only the middle step differs (blocking or awaited).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from tools import parsing, prompts
from tools.client import Completion, PaliGemmaClient
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

R = TypeVar("R", bound=ToolResult)

MAX_TOKENS = {
    "ocr": 256,
    "caption": 128,
    "describe": 256,
    "answer": 128,
    "question": 128,
    "detect": 256,
    "segment": 640,
}


@functools.cache
def default_client() -> PaliGemmaClient:
    """The client built from the environment, created on first use."""
    return PaliGemmaClient()


@dataclass(frozen=True)
class _Task(Generic[R]):
    prompt: str
    max_tokens: int
    finish: Callable[[Completion, LoadedImage, PaliGemmaClient], R]


def _common(task: _Task[Any], completion: Completion, loaded: LoadedImage) -> dict[str, Any]:
    return {
        "image_width": loaded.width,
        "image_height": loaded.height,
        "prompt": task.prompt,
        "model": completion.model,
        "raw_text": completion.text,
        "truncated": completion.truncated,
    }


def _prepare(image: ImageSource, client: PaliGemmaClient) -> tuple[LoadedImage, EncodedImage]:
    loaded = load_image(image, client.image_policy)
    return loaded, encode_for_model(loaded, min_side_px=client.send_min_side_px)


def _run(task: _Task[R], image: ImageSource, client: PaliGemmaClient | None, extra_body: Mapping[str, Any] | None) -> R:
    client = client or default_client()
    with client.limit():  # decoding counts against the concurrency limit, like the request
        loaded, encoded = _prepare(image, client)
        completion = client.complete(encoded, task.prompt, max_tokens=task.max_tokens, extra_body=extra_body)
        return task.finish(completion, loaded, client)


async def _arun(
    task: _Task[R], image: ImageSource, client: PaliGemmaClient | None, extra_body: Mapping[str, Any] | None
) -> R:
    client = client or default_client()
    async with client.alimit():  # decoding counts against the concurrency limit, like the request
        # Decoding images and masks is CPU work: keep it off the event loop.
        loaded, encoded = await asyncio.to_thread(_prepare, image, client)
        completion = await client.acomplete(encoded, task.prompt, max_tokens=task.max_tokens, extra_body=extra_body)
        return await asyncio.to_thread(task.finish, completion, loaded, client)


# --- task definitions ------------------------------------------------------------------------
def _read_text_task(lang: str | None) -> _Task[TextResult]:
    if lang is not None:
        prompts.check_lang(lang)
    prompt = prompts.ocr()

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> TextResult:
        return TextResult(**_common(task, c, loaded), text=c.text.strip(), lang=lang)

    task = _Task(prompt, MAX_TOKENS["ocr"], finish)
    return task


def _answer_task(question: str, lang: str) -> _Task[AnswerResult]:
    prompt = prompts.answer(question, lang)

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> AnswerResult:
        asked = prompt.split(" ", 2)[2]
        return AnswerResult(**_common(task, c, loaded), question=asked, lang=lang, answer=c.text.strip())

    task = _Task(prompt, MAX_TOKENS["answer"], finish)
    return task


def _caption_task(detail: Literal["short", "long"], lang: str) -> _Task[CaptionResult]:
    prompt = prompts.caption(detail, lang)

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> CaptionResult:
        return CaptionResult(**_common(task, c, loaded), detail=detail, lang=lang, caption=c.text.strip())

    task = _Task(prompt, MAX_TOKENS["caption" if detail == "short" else "describe"], finish)
    return task


def _question_task(answer: str, lang: str) -> _Task[QuestionResult]:
    prompt = prompts.question(answer, lang)

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> QuestionResult:
        given = prompt.split(" ", 2)[2]
        return QuestionResult(**_common(task, c, loaded), answer=given, lang=lang, question=c.text.strip())

    task = _Task(prompt, MAX_TOKENS["question"], finish)
    return task


def _detect_task(objects: str | Iterable[str]) -> _Task[Detections]:
    names = prompts.split_objects(objects)
    prompt = prompts.detect(names)

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> Detections:
        common = _common(task, c, loaded)
        parsed = parsing.parse_detections(c.text, width=loaded.width, height=loaded.height, objects=names)
        return Detections(**common, objects=parsed.objects, issues=parsed.issues)

    task = _Task(prompt, MAX_TOKENS["detect"], finish)
    return task


def _segment_task(objects: str | Iterable[str], decode_masks: bool) -> _Task[Segments]:
    names = prompts.split_objects(objects)
    prompt = prompts.segment(names)

    def finish(c: Completion, loaded: LoadedImage, client: PaliGemmaClient) -> Segments:
        decoder = client.vae_decoder(c.model) if decode_masks else None
        note = None
        if decode_masks and decoder is None and client.vae_decoder_error is not None:
            note = f"masks not decoded: {client.vae_decoder_error}"
        parsed = parsing.parse_segments(
            c.text, width=loaded.width, height=loaded.height, decoder=decoder, missing_decoder_note=note, objects=names
        )
        return Segments(
            **_common(task, c, loaded),
            objects=parsed.objects,
            issues=parsed.issues,
            masks_decoded=parsed.masks_decoded,
        )

    task = _Task(prompt, MAX_TOKENS["segment"], finish)
    return task


# --- public functions ----------------------------------------------------------------------
Client = PaliGemmaClient | None
Extra = Mapping[str, Any] | None


def read_text(
    image: ImageSource, *, lang: str | None = None, client: Client = None, extra_body: Extra = None
) -> TextResult:
    """Read the text in an image (PaliGemma prompt `ocr`)."""
    return _run(_read_text_task(lang), image, client, extra_body)


async def aread_text(
    image: ImageSource, *, lang: str | None = None, client: Client = None, extra_body: Extra = None
) -> TextResult:
    """Async `read_text`."""
    return await _arun(_read_text_task(lang), image, client, extra_body)


def answer_visual_question(
    image: ImageSource, question: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> AnswerResult:
    """Answer a question about an image (prompt `answer {lang} {question}`)."""
    return _run(_answer_task(question, lang), image, client, extra_body)


async def aanswer_visual_question(
    image: ImageSource, question: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> AnswerResult:
    """Async `answer_visual_question`."""
    return await _arun(_answer_task(question, lang), image, client, extra_body)


def caption_image(
    image: ImageSource,
    *,
    detail: Literal["short", "long"] = "short",
    lang: str = "en",
    client: Client = None,
    extra_body: Extra = None,
) -> CaptionResult:
    """Caption an image: `short` (prompt `caption {lang}`) or `long` (`describe {lang}`)."""
    return _run(_caption_task(detail, lang), image, client, extra_body)


async def acaption_image(
    image: ImageSource,
    *,
    detail: Literal["short", "long"] = "short",
    lang: str = "en",
    client: Client = None,
    extra_body: Extra = None,
) -> CaptionResult:
    """Async `caption_image`."""
    return await _arun(_caption_task(detail, lang), image, client, extra_body)


def generate_question(
    image: ImageSource, answer: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> QuestionResult:
    """Generate a question about the image whose answer is `answer` (prompt `question {lang} {answer}`)."""
    return _run(_question_task(answer, lang), image, client, extra_body)


async def agenerate_question(
    image: ImageSource, answer: str, *, lang: str = "en", client: Client = None, extra_body: Extra = None
) -> QuestionResult:
    """Async `generate_question`."""
    return await _arun(_question_task(answer, lang), image, client, extra_body)


def locate_objects(
    image: ImageSource, objects: str | Iterable[str], *, client: Client = None, extra_body: Extra = None
) -> Detections:
    """Find objects and return their boxes in pixels (prompt `detect a ; b`)."""
    return _run(_detect_task(objects), image, client, extra_body)


async def alocate_objects(
    image: ImageSource, objects: str | Iterable[str], *, client: Client = None, extra_body: Extra = None
) -> Detections:
    """Async `locate_objects`."""
    return await _arun(_detect_task(objects), image, client, extra_body)


def segment_objects(
    image: ImageSource,
    objects: str | Iterable[str],
    *,
    decode_masks: bool = True,
    client: Client = None,
    extra_body: Extra = None,
) -> Segments:
    """Outline objects: boxes, mask codes and decoded masks (prompt `segment a ; b`)."""
    return _run(_segment_task(objects, decode_masks), image, client, extra_body)


async def asegment_objects(
    image: ImageSource,
    objects: str | Iterable[str],
    *,
    decode_masks: bool = True,
    client: Client = None,
    extra_body: Extra = None,
) -> Segments:
    """Async `segment_objects`."""
    return await _arun(_segment_task(objects, decode_masks), image, client, extra_body)
