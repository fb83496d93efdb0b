"""One turn of the chat app: the tasks it offers, running one on an image, and how the answer reads.

Markdown for Gradio's Chatbot: model text is escaped so it shows literally (`<loc..>`,
`*`, `#`); located objects are listed in words and drawn on the image.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from PIL import Image

from tools import functions, parsing, prompts
from tools.annotate import annotate
from tools.client import PaliGemmaClient
from tools.images import EncodedImage, LoadedImage, encode_for_model
from tools.models import Detections, Segments, ToolResult
from tools.readable import object_lines

Task = Literal["caption", "describe", "ocr", "answer", "detect", "segment", "free"]
Message = dict[str, Any]  # one Chatbot message: {"role": ..., "content": ...}

DRAWN_MAX_SIDE = 1024  # drawn images in the conversation; boxes are computed on the original
FREE_PROMPT_MAX_TOKENS = 256  # for free prompts that start with no known task prefix
TIMES = "\u00d7"
_LOC = re.compile(r"<loc\d{4}>")
_SEG = re.compile(r"<seg\d{3}>")
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # CommonMark lets a backslash escape any ASCII punctuation


@dataclass(frozen=True)
class _TaskSpec:
    label: str  # in the dropdown
    text_label: str | None  # the text box's label; None hides it
    placeholder: str = ""
    uses_lang: bool = False


TASKS: dict[Task, _TaskSpec] = {
    "caption": _TaskSpec("Caption", None, uses_lang=True),
    "describe": _TaskSpec("Describe", None, uses_lang=True),
    "ocr": _TaskSpec("Read text", None),
    "answer": _TaskSpec("Ask a question", "Question", "How many cats are there?", uses_lang=True),
    "detect": _TaskSpec("Detect objects", "Objects (separate with ;)", "cat ; dog"),
    "segment": _TaskSpec("Segment objects", "Objects (separate with ;)", "cat ; dog"),
    "free": _TaskSpec("Free prompt", "Prompt (sent as is)", "detect car ; person"),
}
assert set(TASKS) == set(get_args(Task))


def as_task(name: str) -> Task | None:
    """The task called `name`, or None."""
    return next((task for task in TASKS if task == name), None)


# The 36 languages of Crossmodal-3600, on which PaliGemma reports multilingual captioning;
# any other lowercase ISO 639 code can be typed into the dropdown.
LANGUAGES: tuple[tuple[str, str], ...] = tuple(
    (f"{name} ({code})", code)
    for code, name in (
        ("en", "English"), ("de", "German"), ("fr", "French"), ("es", "Spanish"), ("it", "Italian"),
        ("pt", "Portuguese"), ("nl", "Dutch"), ("zh", "Chinese"), ("ja", "Japanese"), ("ko", "Korean"),
        ("ar", "Arabic"), ("bn", "Bengali"), ("cs", "Czech"), ("da", "Danish"), ("el", "Greek"),
        ("fa", "Persian"), ("fi", "Finnish"), ("fil", "Filipino"), ("he", "Hebrew"), ("hi", "Hindi"),
        ("hr", "Croatian"), ("hu", "Hungarian"), ("id", "Indonesian"), ("mi", "Maori"), ("no", "Norwegian"),
        ("pl", "Polish"), ("quz", "Cusco Quechua"), ("ro", "Romanian"), ("ru", "Russian"), ("sv", "Swedish"),
        ("sw", "Swahili"), ("te", "Telugu"), ("th", "Thai"), ("tr", "Turkish"), ("uk", "Ukrainian"),
        ("vi", "Vietnamese"),
    )
)  # fmt: skip


# --- text for the conversation ---------------------------------------------------------------
def escape_markdown(text: str) -> str:
    """`text` shown literally by the Chatbot's Markdown renderer (model output may hold `<loc..>`, `*`, `#`)."""
    return _MD_PUNCTUATION.sub(r"\\\1", text)


_LINE_BREAKS = re.compile(r"[ \t]*(?:\r\n|[\n\r\v\f\x85\u2028\u2029])\s*")


def code_span(text: str) -> str:
    """`text` as a one-line Markdown code span, whatever backticks and line breaks it holds.

    A blank line would end the span and let the rest render as Markdown (an `<img>` to any
    host): line breaks are shown as ⏎ instead.
    """
    text = _LINE_BREAKS.sub(" ⏎ ", text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def describe_objects(result: Detections | Segments) -> str:
    """One Markdown list item per object (label in bold), then what did not parse."""
    lines = [f"- **{escape_markdown(label)}**{rest}" for label, rest in _split_labels(result)]
    found = f"Found {len(result.objects)} object{'s' if len(result.objects) != 1 else ''}"
    head = f"{found}:" if result.objects else "No objects found."
    notes = [
        f"- not read: {escape_markdown(issue.reason)}" + (f" in {code_span(issue.text)}" if issue.text else "")
        for issue in result.issues
    ]
    return "\n".join([head, *lines, *(["", "Notes:", *notes] if notes else [])])


def _split_labels(result: Detections | Segments) -> list[tuple[str, str]]:
    """(label, the rest of its readable line) for each object."""
    labels = [obj.label for obj in result.objects]
    return [(label, line[len(label) :]) for label, line in zip(labels, object_lines(result), strict=True)]


def user_text(task: Task, lang: str, text: str) -> str:
    spec = TASKS[task]
    if task == "free":
        return code_span(text.strip())
    words = f"{spec.label} ({escape_markdown(lang)})" if spec.uses_lang else spec.label
    return f"{words}: {escape_markdown(text.strip())}" if spec.text_label else words


# --- running one turn --------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One assistant turn: Markdown for the conversation, the typed result, and the drawn image if any."""

    markdown: str
    result: ToolResult
    drawn: Image.Image | None = None


def _drawn(loaded: LoadedImage, result: Detections | Segments) -> Image.Image | None:
    return annotate(loaded.image, result, max_side=DRAWN_MAX_SIDE) if result.objects else None


async def _free_prompt(client: PaliGemmaClient, loaded: LoadedImage, encoded: EncodedImage, text: str) -> Answer:
    prompt = prompts.check_text(text, "prompt")  # one line, no control tokens
    max_tokens = functions.MAX_TOKENS.get(prompt.split(" ", 1)[0], FREE_PROMPT_MAX_TOKENS)
    completion = await client.acomplete(encoded, prompt, max_tokens=max_tokens)
    raw = f"Raw: {code_span(completion.text)}" if completion.text.strip() else "The model gave an empty answer."
    if not _LOC.search(completion.text):
        plain = ToolResult(
            image_width=loaded.width,
            image_height=loaded.height,
            prompt=prompt,
            model=completion.model,
            raw_text=completion.text,
            truncated=completion.truncated,
        )
        return Answer(escape_markdown(completion.text.strip()) or raw, plain)

    def parse() -> Detections | Segments:
        text, width, height = completion.text, loaded.width, loaded.height
        if _SEG.search(text):
            decoder = client.vae_decoder(completion.model)
            return parsing.parse_segments(
                text, width=width, height=height, decoder=decoder, prompt=prompt, model=completion.model
            )
        return parsing.parse_detections(text, width=width, height=height, prompt=prompt, model=completion.model)

    located = await asyncio.to_thread(parse)
    result = located.model_copy(update={"truncated": completion.truncated})
    drawn = await asyncio.to_thread(_drawn, loaded, result)
    return Answer(f"{describe_objects(result)}\n\n{raw}", result, drawn)


async def run_task(
    client: PaliGemmaClient,
    loaded: LoadedImage,
    task: Task,
    *,
    lang: str = "en",
    text: str = "",
    encoded: EncodedImage | None = None,
) -> Answer:
    """Run one task on an image already loaded; raises the tools' PaliGemmaError subclasses."""
    image = loaded.image
    if task == "caption" or task == "describe":
        detail: Literal["short", "long"] = "short" if task == "caption" else "long"
        caption = await functions.acaption_image(image, detail=detail, lang=lang, client=client)
        return Answer(escape_markdown(caption.caption) or "(empty caption)", caption)
    if task == "ocr":
        read = await functions.aread_text(image, client=client)
        return Answer(escape_markdown(read.text) or "(no text found)", read)
    if task == "answer":
        answered = await functions.aanswer_visual_question(image, text, lang=lang, client=client)
        return Answer(escape_markdown(answered.answer) or "(empty answer)", answered)
    if task == "detect":
        found = await functions.alocate_objects(image, text, client=client)
        return Answer(describe_objects(found), found, await asyncio.to_thread(_drawn, loaded, found))
    if task == "segment":
        outlined = await functions.asegment_objects(image, text, client=client)
        return Answer(describe_objects(outlined), outlined, await asyncio.to_thread(_drawn, loaded, outlined))
    if encoded is None:
        encoded = await asyncio.to_thread(encode_for_model, loaded, min_side_px=client.send_min_side_px)
    return await _free_prompt(client, loaded, encoded, text)
