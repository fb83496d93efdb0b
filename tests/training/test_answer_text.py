"""Training targets are written by `tools.answer_text` and read back by the tools' parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools import answer_text, parsing

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).map(lambda t: " ".join(t.split()))
label = label.filter(bool)
bins = st.tuples(st.integers(0, 1022), st.integers(0, 1022)).flatmap(
    lambda lo: st.tuples(st.just(lo[0]), st.just(lo[1]), st.integers(lo[0] + 1, 1023), st.integers(lo[1] + 1, 1023))
)
codes = st.lists(st.integers(0, 127), min_size=16, max_size=16)


@given(st.lists(st.tuples(label, bins), max_size=4))
def test_detections_round_trip(objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    parsed = parsing.parse_detections(answer_text.detection_text(objects), width=640, height=480, strict=True)
    assert [(d.label, d.loc_bins) for d in parsed.objects] == objects


@given(st.lists(st.tuples(label, bins, codes), max_size=3))
def test_segments_round_trip(objects: list[tuple[str, tuple[int, int, int, int], list[int]]]) -> None:
    parsed = parsing.parse_segments(answer_text.segment_text(objects), width=300, height=500, strict=True)
    assert [(s.label, s.loc_bins, list(s.codes)) for s in parsed.objects] == objects


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


@given(st.text(max_size=12) | st.sampled_from(["a < b", "x>y", "\u732b", "caf\u00e9 au lait"]), bins)
def test_a_label_written_reads_back_as_written(name: str, box: tuple[int, int, int, int]) -> None:
    try:
        text = answer_text.detection_text([(name, box)])
    except ValueError:
        return  # refused: see the table below
    parsed = parsing.parse_detections(text, width=640, height=480, strict=True)
    assert [(d.label, d.loc_bins) for d in parsed.objects] == [(name, box)]


@pytest.mark.parametrize(
    "name",
    ["cat;dog", "cat ; dog", "a\nb", "a  b", " cat", "cat ", "", "shoe<eos>", "<loc0001>", "<seg005> x", "tab\there"],
)
def test_a_label_that_would_not_read_back_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="would not read back"):
        answer_text.detection_text([(name, (0, 0, 10, 10))])
    with pytest.raises(ValueError, match="would not read back"):
        answer_text.segment_text([(name, (0, 0, 10, 10), [0] * 16)])
