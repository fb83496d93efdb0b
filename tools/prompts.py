"""PaliGemma 2 task prompts, built from checked parts (docs/prompts.md).

The task prefix always comes first and is chosen by the function, never by the caller's
text. Caller text (object names, questions, answers, language codes) may not contain
what would change the prompt's structure: newlines (a newline ends a PaliGemma prompt),
control characters, or tag-like sequences such as `<loc0123>`, `<seg012>`, `<image>`,
`<eos>`, and every special-token spelling of the real tokenizer (`[multimodal]`, `<2mass>`,
`[@BOS@]`..., tools/special_tokens.py). Object names are split on `;`, PaliGemma's own
separator, as the caller meant; their count and length are checked before any other work.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

from tools.errors import PromptError
from tools.special_tokens import SPECIAL_TOKENS

MAX_OBJECTS = 20
MAX_OBJECT_CHARS = 80
MAX_TEXT_CHARS = 500
# Names given before repeats are dropped: enough for a sloppy list, bounded before any work.
MAX_NAMES_GIVEN = 4 * MAX_OBJECTS

_LANG = re.compile(r"[a-z]{2,3}(-[a-z]{2,4})?")
_TAG = re.compile(r"<\s*/?\s*[A-Za-z0-9_]+\s*>")
# Longest first, so the message names the whole token (`<unused10>`, not `<unused1`...).
_SPECIAL = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))


def check_lang(lang: str) -> str:
    """A language code as PaliGemma's prompts use it (`en`, `de`, `zh`, `pt-br`)."""
    if not isinstance(lang, str) or not _LANG.fullmatch(lang):
        raise PromptError(
            f"language {lang!r} is not a language code: use a lowercase ISO 639 code such as "
            "'en', 'de', 'fr', 'es', 'zh' or 'ja' (docs/prompts.md lists the ones PaliGemma 2 was trained on)."
        )
    return lang


def check_text(text: str, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as one clean line, or a PromptError saying what would break the prompt."""
    if not isinstance(text, str):
        raise PromptError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > 4 * limit:  # before any scan: the checks below are linear, but need not run on megabytes
        raise PromptError(f"{what} is {len(text):,} characters long; the limit is {limit}. Shorten it.")
    stripped = text.strip()
    if any(ch in "\n\r\v\f\x85\u2028\u2029" for ch in stripped):
        raise PromptError(
            f"{what} {text!r} contains a line break; PaliGemma's prompt is one line. Send one line of text."
        )
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in stripped.replace("\t", " ")):
        raise PromptError(f"{what} {text!r} contains control or format characters; remove them.")
    if special := _SPECIAL.search(stripped):
        raise PromptError(
            f"{what} {text!r} contains {special.group()!r}, a control token of PaliGemma's tokenizer "
            "(a special token). Describe the object or question in plain words."
        )
    cleaned = " ".join(stripped.split())  # tabs and runs of spaces become one space
    if tag := _TAG.search(cleaned):
        raise PromptError(
            f"{what} {text!r} contains {tag.group()!r}, which looks like a model control token "
            "(<loc..>, <seg..>, <image>, <eos>...). Describe the object or question in plain words."
        )
    if not cleaned:
        raise PromptError(f"{what} is empty; give some text.")
    if len(cleaned) > limit:
        raise PromptError(f"{what} is {len(cleaned)} characters long; the limit is {limit}. Shorten it.")
    return cleaned


def split_objects(objects: str | Iterable[str]) -> tuple[str, ...]:
    """Object names as a tuple: strings are split on `;`, trimmed, empties and repeats dropped.

    At most MAX_NAMES_GIVEN names, counted before repeats are dropped, so a hostile list costs
    no more than a long honest one.
    """
    too_many = PromptError(
        f"more than {MAX_NAMES_GIVEN} object names given; at most {MAX_OBJECTS} different ones fit one request. "
        "Split them."
    )
    items = [objects] if isinstance(objects, str) else list(itertools.islice(objects, MAX_NAMES_GIVEN + 1))
    if len(items) > MAX_NAMES_GIVEN:
        raise too_many
    names: dict[str, None] = {}  # ordered, and de-duplicated in constant time per name
    given = 0
    for item in items:
        if not isinstance(item, str):
            raise PromptError(f"object names must be strings, got {type(item).__name__}")
        if len(item) > MAX_NAMES_GIVEN * (MAX_OBJECT_CHARS + 1):
            raise PromptError(
                f"the object names are {len(item):,} characters long; at most {MAX_OBJECTS} names of "
                f"{MAX_OBJECT_CHARS} characters fit one request."
            )
        if item.count(";") >= MAX_NAMES_GIVEN:
            raise too_many
        for part in item.split(";"):
            if part.strip():
                given += 1
                if given > MAX_NAMES_GIVEN:
                    raise too_many
                names[check_text(part, "object name", MAX_OBJECT_CHARS)] = None
    if not names:
        raise PromptError("no object names given: name at least one thing to find, e.g. 'cat' or ['cat', 'dog'].")
    if len(names) > MAX_OBJECTS:
        raise PromptError(f"{len(names)} object names given; at most {MAX_OBJECTS} fit one request. Split them.")
    return tuple(names)


def free_prompt(text: str) -> str:
    """A prompt a person typed whole, task prefix included (the chat app's free prompts), checked like caller text."""
    return check_text(text, "prompt")


def ocr() -> str:
    return "ocr"


def caption(detail: Literal["short", "long"], lang: str) -> str:
    if detail not in ("short", "long"):
        raise PromptError(f"detail must be 'short' or 'long', got {detail!r}")
    return f"{'caption' if detail == 'short' else 'describe'} {check_lang(lang)}"


def answer(question: str, lang: str) -> str:
    return f"answer {check_lang(lang)} {check_text(question, 'question', MAX_TEXT_CHARS)}"


def question(answer_text: str, lang: str) -> str:
    return f"question {check_lang(lang)} {check_text(answer_text, 'answer', MAX_TEXT_CHARS)}"


def detect(names: tuple[str, ...]) -> str:
    return "detect " + " ; ".join(names)


def segment(names: tuple[str, ...]) -> str:
    return "segment " + " ; ".join(names)
