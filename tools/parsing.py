"""Pure parsers of PaliGemma's detection and segmentation answers. They never guess.

An answer is objects joined by " ; ", each `<loc>`x4 [`<seg>`x16] label. What parses is
returned; every part that does not (a truncated group, a missing label, an empty box,
stray text) is reported as a ParseIssue with the text concerned. Nothing is raised for a
malformed answer unless `strict=True` asks for it. A box with codes but no label (big_vision
treats the label as optional) is kept: labelled with the one object asked for, if one was,
else left empty, and a ParseIssue says so. Parsing is linear in the answer's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from tools import geometry, masks
from tools.errors import InvalidInputError, OutputParseError
from tools.models import Box, Detection, Detections, ParseIssue, Segment, Segments
from tools.special_tokens import CONTROL
from tools.vae_decoder import CODEBOOK_SIZE, NUM_CODES

if TYPE_CHECKING:
    from tools.vae_decoder import VaeDecoder

LOCS_PER_BOX = 4
OBJECT_SEPARATOR = " ; "  # between objects in an answer, as in prompts
LOC_TOKEN = re.compile(r"<loc\d{4}>")
SEG_TOKEN = re.compile(r"<seg\d{3}>")

# Tokens a decode keeps when asked not to skip special tokens (`<eos>` after the answer, `<pad>`
# after that, `<image>`/`<bos>` of an echoed prompt): no part of a label, passed over.
_CONTROL = (*CONTROL, "<image>")
_TOKENS = re.compile(
    r"<loc(?P<loc>\d{4})>"
    r"|<seg(?P<seg>\d{3})>"
    r"|(?P<sep>;)"
    rf"|(?P<control>{'|'.join(map(re.escape, _CONTROL))})"
    r"|(?P<bad><(?:loc|seg)[^<>;]{0,12}>)"
    r"|(?P<text>[^<;]+|<)"
)


def is_plain_text(text: str) -> bool:
    """Whether `text` holds no token and no separator: as a label, it reads back as written."""
    return all(match.lastgroup == "text" for match in _TOKENS.finditer(text))


Mode = Literal["detect", "segment"]
ISSUE_EXCERPT_CHARS = 120  # the raw answer stays whole in `raw_text`
# Full-size masks take a byte per image pixel each: past this total, masks are left undecoded.
MAX_MASK_BYTES = 256 * 1024 * 1024
# Objects read from one answer, and issues reported: 640 tokens of `segment` hold at most 32
# objects, 256 of `detect` 64; an answer of 97,000 boxes (4 MiB) took 2 s and gave a 15 MB result.
MAX_OBJECTS = 256
MAX_ISSUES = 32


def _excerpt(text: str) -> str:
    text = text.strip()
    if len(text) <= ISSUE_EXCERPT_CHARS:
        return text
    return f"{text[:ISSUE_EXCERPT_CHARS]}... (+{len(text) - ISSUE_EXCERPT_CHARS} characters)"


@dataclass
class _Group:
    start: int
    end: int = 0
    locs: list[int] = field(default_factory=list)
    segs: list[int] = field(default_factory=list)
    label_parts: list[str] = field(default_factory=list)  # joined once: `+=` on an attribute is quadratic
    has_label: bool = False
    malformed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Parsed:
    label: str
    bins: tuple[int, int, int, int]
    xyxy: tuple[float, float, float, float]
    codes: tuple[int, ...]


def _groups(text: str) -> list[_Group]:
    """Split an answer into candidate objects at " ; " and wherever a new box starts."""
    groups: list[_Group] = []
    current: _Group | None = None
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup
        if kind == "sep":
            current = None
            continue
        if kind == "control":
            continue
        starts_new_box = kind == "loc" and current is not None and (current.has_label or current.segs)
        if current is None or starts_new_box:
            if kind == "text" and not match.group().strip():
                continue  # whitespace between objects
            current = _Group(start=match.start())
            groups.append(current)
        current.end = match.end()
        if kind == "loc":
            current.locs.append(int(match.group("loc")))
        elif kind == "seg":
            current.segs.append(int(match.group("seg")))
        elif kind == "bad":
            current.malformed.append(match.group())
        else:
            current.label_parts.append(match.group())
            current.has_label = current.has_label or not match.group().isspace()
    return [box for group in groups for box in _unlabelled_boxes_apart(group)]


def _unlabelled_boxes_apart(group: _Group) -> list[_Group]:
    """Boxes written one after another without labels (8, 12, ... locations in a row) as one group
    each, the label and codes with the last; any other count stays one malformed group."""
    boxes = len(group.locs) // LOCS_PER_BOX
    if boxes < 2 or len(group.locs) % LOCS_PER_BOX:
        return [group]
    apart = [
        _Group(start=group.start, end=group.end, locs=group.locs[i * LOCS_PER_BOX : (i + 1) * LOCS_PER_BOX])
        for i in range(boxes - 1)
    ]
    return [*apart, replace(group, locs=group.locs[-LOCS_PER_BOX:])]


def _check(group: _Group, mode: Mode, width: int, height: int, asked: Sequence[str]) -> _Parsed | str:
    """The parsed object, or the reason it is not one."""
    label = " ".join("".join(group.label_parts).split())
    if group.malformed:
        return f"malformed token(s) {', '.join(group.malformed)}"
    if not group.locs:
        return "text without location tokens"
    if len(group.locs) != LOCS_PER_BOX:
        return f"{len(group.locs)} location tokens where a box has {LOCS_PER_BOX}"
    if any(b >= geometry.LOC_BINS for b in group.locs):
        return f"location bin out of range 0..{geometry.LOC_SCALE}"
    if mode == "segment" and len(group.segs) != NUM_CODES:
        return f"{len(group.segs)} segmentation tokens where a mask has {NUM_CODES}"
    if mode == "detect" and group.segs:
        return f"{len(group.segs)} segmentation tokens in a detection answer"
    if any(c >= CODEBOOK_SIZE for c in group.segs):
        return f"segmentation code out of range 0..{CODEBOOK_SIZE - 1}"
    if not label:
        label = asked[0] if len(asked) == 1 else ""
    y_min, x_min, y_max, x_max = group.locs
    if y_max <= y_min or x_max <= x_min:
        return "empty box (max edge not beyond min edge)"
    bins = (y_min, x_min, y_max, x_max)
    return _Parsed(label, bins, geometry.bins_to_xyxy(bins, width=width, height=height), tuple(group.segs))


def _not_read(left: int) -> str:
    return (
        f"{left:,} more part(s) of the answer not read: the tools read at most {MAX_OBJECTS} objects and report "
        f"{MAX_ISSUES} issues (a PaliGemma answer within the tools' token budgets holds far fewer)"
    )


def _missing_label(label: str) -> str:
    if label:
        return f"no label after the codes: labelled {label!r}, the one object asked for"
    return "no label after the codes: kept without a label (several or no objects were asked for)"


def _parse(
    text: str, mode: Mode, width: int, height: int, strict: bool, asked: Sequence[str] | None
) -> tuple[list[_Parsed], list[ParseIssue]]:
    if width < 1 or height < 1:
        raise InvalidInputError(f"image width and height must be positive, got {width} x {height}")
    names = [] if asked is None else [asked] if isinstance(asked, str) else list(asked)
    parsed: list[_Parsed] = []
    issues: list[ParseIssue] = []
    groups = _groups(text)
    for index, group in enumerate(groups):
        if len(parsed) >= MAX_OBJECTS or len(issues) >= MAX_ISSUES:
            issues.append(ParseIssue(text=_excerpt(text[group.start :]), reason=_not_read(len(groups) - index)))
            break
        outcome = _check(group, mode, width, height, names)
        excerpt = _excerpt(text[group.start : group.end])
        if isinstance(outcome, str):
            issues.append(ParseIssue(text=excerpt, reason=outcome))
            continue
        if not group.has_label:
            issues.append(ParseIssue(text=excerpt, reason=_missing_label(outcome.label)))
        parsed.append(outcome)
    if strict and issues:
        details = "; ".join(f"{i.reason}: {i.text!r}" for i in issues)
        raise OutputParseError(f"the answer did not fully parse ({details}); raw answer: {text!r}")
    return parsed, issues


def _box(p: _Parsed) -> Box:
    x_min, y_min, x_max, y_max = p.xyxy
    return Box(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max)


def parse_detections(
    text: str,
    *,
    width: int,
    height: int,
    prompt: str = "",
    model: str = "",
    strict: bool = False,
    objects: Sequence[str] | None = None,
) -> Detections:
    """Boxes in pixels of a `width` x `height` image from a `detect ...` answer.

    `objects` are the names asked for: a box without a label takes the name when there was one.
    """
    parsed, issues = _parse(text, "detect", width, height, strict, objects)
    found = tuple(Detection(label=p.label, box=_box(p), loc_bins=p.bins) for p in parsed)
    return Detections(
        image_width=width,
        image_height=height,
        prompt=prompt,
        model=model,
        raw_text=text,
        objects=found,
        issues=tuple(issues),
    )


def parse_segments(
    text: str,
    *,
    width: int,
    height: int,
    decoder: VaeDecoder | None = None,
    prompt: str = "",
    model: str = "",
    strict: bool = False,
    missing_decoder_note: str | None = None,
    objects: Sequence[str] | None = None,
) -> Segments:
    """Boxes and mask codes from a `segment ...` answer; masks too when `decoder` is given.

    `objects` are the names asked for: a box without a label takes the name when there was one.
    At most MAX_MASK_BYTES of full-size masks are decoded; the objects past it keep box and codes.
    """
    parsed, issues = _parse(text, "segment", width, height, strict, objects)
    pasted: list[np.ndarray | None] = [None] * len(parsed)
    if decoder is not None and parsed:
        fit = max(1, MAX_MASK_BYTES // (width * height))
        if len(parsed) > fit:
            issues.append(ParseIssue(text="", reason=f"masks decoded for the first {fit} objects only (memory limit)"))
        masks64 = decoder.decode(np.array([p.codes for p in parsed[:fit]], dtype=np.int64))
        pasted[:fit] = [
            masks.paste_mask(m, p.xyxy, width=width, height=height) for m, p in zip(masks64, parsed[:fit], strict=True)
        ]
    elif decoder is None and parsed and missing_decoder_note:
        issues.append(ParseIssue(text="", reason=missing_decoder_note))
    found = tuple(
        Segment(label=p.label, box=_box(p), loc_bins=p.bins, codes=p.codes, mask=m)
        for p, m in zip(parsed, pasted, strict=True)
    )
    return Segments(
        image_width=width,
        image_height=height,
        prompt=prompt,
        model=model,
        raw_text=text,
        objects=found,
        issues=tuple(issues),
        masks_decoded=decoder is not None,
    )


def parse_located(
    text: str,
    *,
    width: int,
    height: int,
    decoder_for: Callable[[], VaeDecoder | None] | None = None,
    prompt: str = "",
    model: str = "",
) -> Detections | Segments | None:
    """The objects in any answer with location tokens (a free prompt's too), or None when it has none.

    Segments when the answer holds `<seg>` tokens, their masks decoded with `decoder_for()`
    (called only then: getting a decoder may mean loading a checkpoint), else detections.
    """
    if not LOC_TOKEN.search(text):
        return None
    if SEG_TOKEN.search(text):
        decoder = decoder_for() if decoder_for is not None else None
        return parse_segments(text, width=width, height=height, decoder=decoder, prompt=prompt, model=model)
    return parse_detections(text, width=width, height=height, prompt=prompt, model=model)
