"""Readable rendering of location tokens, for text-only chat front ends."""

from __future__ import annotations

import pytest

from tools.readable import readable_answer

SEGS = "".join(f"<seg{c:03d}>" for c in range(16))


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        pytest.param("a cat on a mat", "a cat on a mat", id="plain-text-unchanged"),
        pytest.param(
            " <loc0199><loc0152><loc1021><loc0744> person",
            "person at (59, 79)\u2013(291, 405) px",
            id="real-paligemma2-person",
        ),
        pytest.param(
            "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0512><loc0512><loc1023><loc1023> dog",
            "cat at (0, 0)\u2013(200, 203) px; dog at (200, 203)\u2013(400, 406) px",
            id="two-objects",
        ),
        pytest.param(
            f"<loc0000><loc0000><loc0512><loc0512>{SEGS} cat",
            "cat at (0, 0)\u2013(200, 203) px",
            id="segment-without-decoder",
        ),
        pytest.param(
            "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0001><loc0002>",
            "cat at (0, 0)\u2013(200, 203) px; (not read: 2 location tokens where a box has 4)",
            id="truncated",
        ),
        pytest.param("<loc0001><loc0002>", "no objects; (not read: 2 location tokens where a box has 4)", id="nothing"),
    ],
)
def test_readable_answer(text: str, readable: str) -> None:
    assert readable_answer(text, width=400, height=406) == readable
