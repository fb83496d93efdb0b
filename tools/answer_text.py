"""PaliGemma answer text from boxes and mask codes: the inverse of `tools.parsing`.

Training targets are written with these functions and read back with the parsers, so
the `<locNNNN>`/`<segNNN>` format lives in one place (`tools.geometry` for the bins).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tools import geometry
from tools.parsing import OBJECT_SEPARATOR, is_plain_text
from tools.vae_decoder import CODEBOOK_SIZE, NUM_CODES

__all__ = ["detection_text", "label_text", "loc_tokens", "seg_tokens", "segment_text"]


def loc_tokens(bins_yxyx: Sequence[int]) -> str:
    """`<locNNNN>` x4 for y-first bins (y_min, x_min, y_max, x_max)."""
    if len(bins_yxyx) != 4 or any(not 0 <= b <= geometry.LOC_SCALE for b in bins_yxyx):
        raise ValueError(f"need four bins in 0..{geometry.LOC_SCALE}, got {bins_yxyx!r}")
    return "".join(f"<loc{b:04d}>" for b in bins_yxyx)


def seg_tokens(codes: Sequence[int]) -> str:
    """`<segNNN>` x16 for the 16 VQ-VAE codebook indices of one mask."""
    if len(codes) != NUM_CODES or any(not 0 <= c < CODEBOOK_SIZE for c in codes):
        raise ValueError(f"need {NUM_CODES} codes in 0..{CODEBOOK_SIZE - 1}, got {codes!r}")
    return "".join(f"<seg{c:03d}>" for c in codes)


def label_text(label: str) -> str:
    """`label` as an answer writes it, if the parsers read it back the same: plain text (no `;`,
    the object separator, and no token such as `<loc0001>` or `<eos>`), printable, single spaces."""
    if not (label and label.isprintable() and " ".join(label.split()) == label and is_plain_text(label)):
        raise ValueError(
            f"the label {label!r} would not read back from an answer: use single spaces, no line breaks, "
            "no ';' and no tokens such as <loc0001> or <eos>"
        )
    return label


def detection_text(objects: Iterable[tuple[str, Sequence[int]]]) -> str:
    """A `detect` answer: `<loc>`x4 label, joined by " ; ", from (label, y-first bins) pairs."""
    return OBJECT_SEPARATOR.join(f"{loc_tokens(bins)} {label_text(label)}" for label, bins in objects)


def segment_text(objects: Iterable[tuple[str, Sequence[int], Sequence[int]]]) -> str:
    """A `segment` answer: `<loc>`x4 `<seg>`x16 label, joined by " ; ", from (label, bins, codes)."""
    return OBJECT_SEPARATOR.join(
        f"{loc_tokens(bins)}{seg_tokens(codes)} {label_text(label)}" for label, bins, codes in objects
    )
