"""Garbled model output, fuzzed: the parsers and the decoder raise nothing but our own errors
and never return geometry outside the image.

Examples per property come from the Hypothesis profile (tests/conftest.py): 200 in the test
suite; `scripts/fuzz_outputs.sh` runs the "fuzz" profile, 20,000 each."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.tools.fuzz_strategies import answers, image_sizes
from tests.vae_fixture import write_random_vae_npz
from tools import InvalidInputError, PaliGemmaError, parse_detections, parse_segments
from tools.masks import paste_mask
from tools.vae_decoder import VaeDecoder

TOKEN = re.compile(r"<(loc\d{4}|seg\d{3})>")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> VaeDecoder:
    return VaeDecoder.from_npz(write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz"))


def inside(box: tuple[float, float, float, float], width: int, height: int) -> bool:
    x_min, y_min, x_max, y_max = box
    return 0 <= x_min < x_max <= width and 0 <= y_min < y_max <= height


@given(text=answers, size=image_sizes)
@example(text="<loc0000><loc0000><loc0001><loc0001> ", size=(1, 1))  # found by Hypothesis: a box, no label
def test_detection_parser_never_escapes_and_stays_inside(text: str, size: tuple[int, int]) -> None:
    width, height = size
    result = parse_detections(text, width=width, height=height)
    assert result.raw_text == text
    assert all(inside(d.box.xyxy, width, height) for d in result.objects)
    assert not any(TOKEN.search(d.label) for d in result.objects)
    # A box without a label is kept (the geometry is not lost) and reported (tools/parsing.py)
    unlabelled = sum(not d.label for d in result.objects)
    assert unlabelled <= sum(i.reason.startswith("no label after the codes") for i in result.issues)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=answers, size=image_sizes)
def test_segmentation_parser_with_masks_stays_inside(text: str, size: tuple[int, int], decoder: VaeDecoder) -> None:
    width, height = size
    result = parse_segments(text, width=width, height=height, decoder=decoder)
    for segment in result.objects:
        assert inside(segment.box.xyxy, width, height)
        assert segment.mask is not None and segment.mask.shape == (height, width)
        rows, cols = np.nonzero(segment.mask)
        if rows.size:
            assert cols.min() >= int(segment.box.x_min) and cols.max() < max(int(segment.box.x_max), 1)
            assert rows.min() >= int(segment.box.y_min) and rows.max() < max(int(segment.box.y_max), 1)
        if segment.outline is not None and not segment.outline.is_empty:
            x0, y0, x1, y1 = segment.outline.bounds
            assert 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height
            assert segment.outline.is_valid


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes=st.lists(st.lists(st.integers(-300, 300), min_size=0, max_size=20), min_size=0, max_size=4))
def test_decoder_raises_only_invalid_input(codes: list[list[int]], decoder: VaeDecoder) -> None:
    try:
        masks = decoder.decode(np.array(codes, dtype=object if len({len(c) for c in codes}) > 1 else np.int64))
    except InvalidInputError:
        return
    assert masks.shape == (len(codes), 64, 64) and np.isfinite(masks).all()


@given(
    box=st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False)] * 4),
    size=image_sizes,
    mask=st.sampled_from([np.ones((64, 64), np.float32), -np.ones((64, 64), np.float32)]),
)
def test_paste_never_writes_outside_the_image(
    box: tuple[float, float, float, float], size: tuple[int, int], mask: np.ndarray
) -> None:
    width, height = size
    try:
        pasted = paste_mask(mask, box, width=width, height=height)
    except PaliGemmaError:
        return
    assert pasted.shape == (height, width) and pasted.dtype == np.bool_


def test_strategies_reach_real_objects(decoder: VaeDecoder, tmp_path: Path) -> None:
    """The fuzzing is not vacuous: well-formed objects among the garbage parse."""
    seg = "".join(f"<seg{c:03d}>" for c in range(16))
    text = f"junk <loc12> ; <loc0001><loc0002><loc0500><loc0600> {seg} ok ; <<>>"
    result = parse_segments(text, width=100, height=50, decoder=decoder)
    assert [s.label for s in result.objects] == ["ok"] and len(result.issues) == 2
