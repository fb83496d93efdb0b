"""Common English words for the last reading stage, and the ones it never sees.

The domain's words are any 3-8 letters A-Z (docs/synthetic-domain.md), and the model learns to
read on random letters. The words people write (and test a reader with) are English: trained on
random letters alone, the model read `VISION` as `VISON` at every size (docs/tiny-model.md,
"Common words"). The last reading stage draws half its words from the most frequent English
words of `wordfreq`, 3-8 letters long; a fixed fifth of them (by a checksum of the word) and
the words `benchmarks.tiny_accuracy` reads in plain layouts are held out, never trained on.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Final

SOURCE_WORDS: Final = 20_000  # wordfreq's most frequent English words, before the filter
HELD_OUT_EVERY: Final = 5  # one word in five held out, by crc32
# Words a test of reading is likely to pick: held out, read by benchmarks.tiny_accuracy in plain layouts.
CHECK_WORDS: Final[tuple[str, ...]] = tuple(
    "HELLO WORLD CAT DOG STOP OPEN TEXT WORD TEST TINY GEMMA PALI SHAPES VISION MODEL PYTHON ABC OCR READ "
    "QUIZ JAZZ APPLE BANANA ZEBRA EXIT SALE HOUSE LIGHT GREEN".split()
)
_WORD: Final = re.compile(r"[a-z]{3,8}")


@functools.cache
def common_words() -> tuple[str, ...]:
    """The most frequent English words of 3-8 letters a-z, in capitals, most frequent first."""
    import wordfreq

    seen: dict[str, None] = {}
    for word in wordfreq.top_n_list("en", SOURCE_WORDS):
        if _WORD.fullmatch(word):
            seen.setdefault(word.upper(), None)
    return tuple(seen)


def is_held_out(word: str) -> bool:
    """Whether `word` is kept out of training: a check word, or in the checksum's fifth."""
    return word in CHECK_WORDS or zlib.crc32(word.encode("ascii")) % HELD_OUT_EVERY == 0


def training_words() -> tuple[str, ...]:
    return tuple(w for w in common_words() if not is_held_out(w))


def held_out_words() -> tuple[str, ...]:
    """The held-out common words but the check words (those are read in layouts of their own)."""
    return tuple(w for w in common_words() if is_held_out(w) and w not in CHECK_WORDS)
