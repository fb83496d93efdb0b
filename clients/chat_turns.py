"""One turn of the chat app: its task menu (from the task registry), running one on an image, how the answer reads.

Markdown for Gradio's Chatbot: model text is escaped so it shows literally (`<loc..>`,
`*`, `#`); located objects are listed in words and drawn on the image.
"""

from __future__ import annotations

import asyncio
import logging
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tools import (
    TASKS,
    TASKS_BY_NAME,
    EncodedImage,
    LoadedImage,
    LocatedObjects,
    PaliGemmaClient,
    Task,
    ToolResult,
    annotate,
    arun_task,
    encode_for_model,
    free_prompt,
    object_lines,
    parse_located,
    prompt_budget,
)

logger = logging.getLogger(__name__)

Message = dict[str, Any]  # one Chatbot message: {"role": ..., "content": ...}

DRAWN_MAX_SIDE = 1024  # drawn images in the conversation; boxes are computed on the original
DRAWN_MIN_SIDE = 512  # a smaller image is drawn enlarged, so that its labels do not cover it
# What the conversation shows of one text: PaliGemma's answers are a few hundred characters; a
# browser takes seconds to render 30,000 as Markdown (a minute and more for a broken endpoint's MiB).
SHOWN_MAX_CHARS = 10_000
TYPED_MAX_CHARS = 2_000  # the text box's limit: every prompt the checks accept fits
FREE_PROMPT = "Free prompt"  # a prompt typed whole, sent as it is: the one menu entry that is no task
TIMES = "\u00d7"
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # CommonMark lets a backslash escape any ASCII punctuation


@dataclass(frozen=True)
class MenuEntry:
    """One entry of the task menu: a task of the registry with the options the entry fixes, or the free prompt."""

    label: str
    task: Task[Any, Any] | None  # None: the free prompt
    placeholder: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def typed_options(self) -> list[str]:
        """The options a person must type: the task's required ones the entry does not fix."""
        if self.task is None:
            return ["prompt"]
        fields = self.task.options.model_fields
        return [name for name, info in fields.items() if info.is_required() and name not in self.fixed]

    @property
    def text_option(self) -> str | None:
        """The option a person types (a question, an answer, object names) in the one text box."""
        typed = self.typed_options
        return typed[0] if typed else None

    @property
    def lists_names(self) -> bool:
        """Whether the typed text is a list of names, separated with `;`."""
        if self.task is None or self.text_option is None:
            return False
        return typing.get_origin(self.task.options.model_fields[self.text_option].annotation) is list

    @property
    def text_label(self) -> str | None:
        """The text box's label; None hides it."""
        if self.task is None:
            return "Prompt (sent as is)"
        if self.text_option is None:
            return None
        return self.text_option.capitalize() + (" (separate with ;)" if self.lists_names else "")

    @property
    def uses_lang(self) -> bool:
        return self.task is not None and "lang" in self.task.options.model_fields

    def options(self, lang: str, text: str) -> Any:
        """The task's options for what the person chose and typed."""
        assert self.task is not None
        values = dict(self.fixed)
        if self.uses_lang:
            values["lang"] = lang
        if self.text_option is not None:
            values[self.text_option] = [text] if self.lists_names else text  # names are split on `;` later
        return self.task.given(**values)


def menu(tasks: Sequence[Task[Any, Any]] = TASKS) -> dict[str, MenuEntry]:
    """The task menu by label: the chat entries of every task, then the free prompt. The app has one
    text box, so an entry whose task needs more than one typed value (and does not fix the rest) is
    left out, and said so in the log; its task stays on every other surface."""
    entries = [MenuEntry(e.label, task, e.placeholder, e.fixed) for task in tasks for e in task.chat]
    for entry in entries:
        if len(entry.typed_options) > 1:
            logger.warning("chat menu: %r needs %s typed: left out (one text box)", entry.label, entry.typed_options)
    offered = [entry for entry in entries if len(entry.typed_options) <= 1]
    return {e.label: e for e in [*offered, MenuEntry(FREE_PROMPT, None, "detect car ; person")]}


MENU = menu()
# The app opens on the caption, the tool to use first when one does not know what the image shows.
OPENING_ENTRY = TASKS_BY_NAME["caption_image"].chat[0].label


def menu_entry(label: str) -> MenuEntry | None:
    """The menu entry called `label`, or None."""
    return MENU.get(label)


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


def describe_objects(result: LocatedObjects) -> str:
    """One Markdown list item per object (label in bold), then what did not parse."""
    lines = [f"- **{escape_markdown(label)}**{rest}" for label, rest in _split_labels(result)]
    found = f"Found {len(result.objects)} object{'s' if len(result.objects) != 1 else ''}"
    head = f"{found}:" if result.objects else "No objects found."
    notes = [
        f"- not read: {escape_markdown(issue.reason)}" + (f" in {code_span(issue.text)}" if issue.text else "")
        for issue in result.issues
    ]
    return "\n".join([head, *lines, *(["", "Notes:", *notes] if notes else [])])


def _split_labels(result: LocatedObjects) -> list[tuple[str, str]]:
    """(label, the rest of its readable line) for each object."""
    labels = [obj.label for obj in result.objects]
    return [(label, line[len(label) :]) for label, line in zip(labels, object_lines(result), strict=True)]


def shown(text: str, limit: int = SHOWN_MAX_CHARS, *, whole: str = "; the whole text is in Raw model text") -> str:
    """`text` as the conversation shows it: its first `limit` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit:,} more characters{whole})"


def user_text(entry: MenuEntry, lang: str, text: str) -> str:
    typed = shown(text.strip(), TYPED_MAX_CHARS, whole=" not shown")  # the API takes any length; checks refuse it
    if entry.task is None:
        return code_span(typed) if typed else "(an empty prompt)"
    words = f"{entry.label} ({escape_markdown(shown(lang, 40, whole=''))})" if entry.uses_lang else entry.label
    return f"{words}: {escape_markdown(typed)}" if entry.text_option else words


# --- running one turn --------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One assistant turn: Markdown for the conversation, the typed result, and the drawn image if any."""

    markdown: str
    result: ToolResult
    drawn: Image.Image | None = None


def _drawn(loaded: LoadedImage, result: LocatedObjects) -> Image.Image | None:
    if not result.objects:
        return None
    return annotate(loaded.image, result, max_side=DRAWN_MAX_SIDE, min_side=DRAWN_MIN_SIDE)


async def encode_for_free_prompts(client: PaliGemmaClient, loaded: LoadedImage) -> EncodedImage:
    """The image as free prompts send it: at the served model's input size (asks the endpoint its model)."""
    side = client.send_side_px(await client.amodel())
    return await asyncio.to_thread(encode_for_model, loaded, min_side_px=side)


async def _free_prompt(client: PaliGemmaClient, loaded: LoadedImage, encoded: EncodedImage, prompt: str) -> Answer:
    max_tokens = prompt_budget(prompt)
    completion = await client.acomplete(encoded, prompt, max_tokens=max_tokens)
    raw = f"Raw: {code_span(shown(completion.text))}" if completion.text.strip() else "The model gave an empty answer."

    def parse() -> LocatedObjects | None:
        return parse_located(
            completion.text,
            width=loaded.width,
            height=loaded.height,
            decoder_for=lambda: client.vae_decoder(completion.model),
            prompt=prompt,
            model=completion.model,
        )

    located = await asyncio.to_thread(parse)
    if located is None:
        plain = ToolResult(
            image_width=loaded.width,
            image_height=loaded.height,
            prompt=prompt,
            model=completion.model,
            raw_text=completion.text,
            truncated=completion.truncated,
        )
        return Answer(escape_markdown(shown(completion.text.strip())) or raw, plain)
    result = located.model_copy(update={"truncated": completion.truncated})
    drawn = await asyncio.to_thread(_drawn, loaded, result)
    return Answer(f"{describe_objects(result)}\n\n{raw}", result, drawn)


async def run_entry(
    client: PaliGemmaClient,
    loaded: LoadedImage,
    entry: MenuEntry,
    *,
    lang: str = "en",
    text: str = "",
    encoded: EncodedImage | None = None,
) -> Answer:
    """Run one menu entry on an image already loaded; raises the tools' PaliGemmaError subclasses."""
    if entry.task is None:
        prompt = free_prompt(text)  # one line, no control tokens: refused before any request
        if encoded is None:
            encoded = await encode_for_free_prompts(client, loaded)
        return await _free_prompt(client, loaded, encoded, prompt)
    result = await arun_task(entry.task, loaded, entry.options(lang, text), client=client)
    if isinstance(result, LocatedObjects):
        return Answer(describe_objects(result), result, await asyncio.to_thread(_drawn, loaded, result))
    words = getattr(result, entry.task.answer_field or "raw_text")
    return Answer(escape_markdown(shown(words)) or "(empty answer)", result)
