"""The common words of the last reading stage: in the domain, and the held-out ones never trained on."""

from __future__ import annotations

import re

from training import common_words


def test_common_words_are_words_of_the_domain() -> None:
    words = common_words.common_words()
    assert len(words) > 10_000 and len(set(words)) == len(words)
    assert all(re.fullmatch("[A-Z]{3,8}", w) for w in words)
    assert words[:3] == ("THE", "AND", "FOR")  # most frequent first


def test_held_out_words_are_never_trained_on() -> None:
    trained, held_out = set(common_words.training_words()), set(common_words.held_out_words())
    assert not trained & held_out and not trained & set(common_words.CHECK_WORDS)
    assert trained | held_out | (set(common_words.CHECK_WORDS) & set(common_words.common_words())) == set(
        common_words.common_words()
    )
    share = len(held_out) / len(common_words.common_words())
    assert 0.17 < share < 0.23  # a fifth, by checksum
    assert {"HELLO", "VISION", "CAT"} <= set(common_words.CHECK_WORDS)
    assert all(common_words.is_held_out(w) for w in common_words.CHECK_WORDS)
