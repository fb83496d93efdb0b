"""Training targets are written by `tools.answer_text` and read back by the tools' parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools import answer_text, parsing

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).map(str.strip).filter(bool)
bins = st.tuples(st.integers(0, 1022), st.integers(0, 1022)).flatmap(
    lambda lo: st.tuples(st.just(lo[0]), st.just(lo[1]), st.integers(lo[0] + 1, 1023), st.integers(lo[1] + 1, 1023))
)
codes = st.lists(st.integers(0, 127), min_size=16, max_size=16)


@given(st.lists(st.tuples(label, bins), max_size=4))
def test_detections_round_trip(objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    parsed = parsing.parse_detections(answer_text.detection_text(objects), width=640, height=480, strict=True)
    assert [(d.label, d.loc_bins) for d in parsed.objects] == [(" ".join(n.split()), b) for n, b in objects]


@given(st.lists(st.tuples(label, bins, codes), max_size=3))
def test_segments_round_trip(objects: list[tuple[str, tuple[int, int, int, int], list[int]]]) -> None:
    parsed = parsing.parse_segments(answer_text.segment_text(objects), width=300, height=500, strict=True)
    assert [(s.label, s.loc_bins, list(s.codes)) for s in parsed.objects] == [
        (" ".join(n.split()), b, c) for n, b, c in objects
    ]


def test_the_real_shoe_answer_is_written_back_byte_for_byte() -> None:
    real = "<loc0051><loc0309><loc0708><loc0646> shoe"  # paligemma-3b-pt-224, transformers integration test
    parsed = parsing.parse_detections(real, width=224, height=224)
    assert answer_text.detection_text([(d.label, d.loc_bins) for d in parsed.objects]) == real


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: answer_text.loc_tokens((1, 2, 3)), "four bins", id="three-bins"),
        pytest.param(lambda: answer_text.loc_tokens((0, 0, 1024, 5)), "four bins", id="bin-out-of-range"),
        pytest.param(lambda: answer_text.seg_tokens([0] * 15), "16 codes", id="fifteen-codes"),
        pytest.param(lambda: answer_text.seg_tokens([128] * 16), "16 codes", id="code-out-of-range"),
    ],
)
def test_bad_inputs_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
