"""Pixel tests of the drawing: boxes, masks, distinct colours, the legend band."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tools import parse_detections
from tools.annotate import MASK_ALPHA, PALETTE, annotate, label_colours
from tools.models import Box, Segment, Segments

WHITE = (255, 255, 255)


def white(width: int = 400, height: int = 300) -> Image.Image:
    return Image.new("RGB", (width, height), WHITE)


def detections(text: str, width: int = 400, height: int = 300):  # type: ignore[no-untyped-def]
    return parse_detections(text, width=width, height=height)


def test_box_edges_have_the_label_colour_and_the_inside_is_untouched() -> None:
    result = detections("<loc0205><loc0256><loc0818><loc0767> cat")
    x0, y0, x1, y1 = (int(v) for v in result.objects[0].box.xyxy)
    drawn = annotate(white(), result)
    cat = PALETTE[0]
    assert drawn.getpixel((x0 + 1, (y0 + y1) // 2)) == cat  # left edge
    assert drawn.getpixel((x1 - 1, (y0 + y1) // 2)) == cat  # right edge
    assert drawn.getpixel(((x0 + x1) // 2, y1 - 1)) == cat  # bottom edge
    assert drawn.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == WHITE  # detections are not filled
    assert drawn.getpixel((5, 5)) == WHITE  # outside


def test_each_label_gets_its_own_colour_and_repeats_share_it() -> None:
    result = detections(
        "<loc0100><loc0100><loc0300><loc0300> cat ; <loc0500><loc0500><loc0700><loc0700> dog ; "
        "<loc0800><loc0100><loc1000><loc0300> cat"
    )
    colours = label_colours([o.label for o in result.objects])
    assert colours == {"cat": PALETTE[0], "dog": PALETTE[1]}
    drawn = annotate(white(), result)
    for obj in result.objects:
        x0, y0, _, y1 = obj.box.xyxy
        assert drawn.getpixel((int(x0), int((y0 + y1) / 2))) == colours[obj.label]


def test_legend_band_lists_labels_below_the_image() -> None:
    result = detections("<loc0100><loc0100><loc0300><loc0300> cat ; <loc0500><loc0500><loc0700><loc0700> dog")
    drawn = annotate(white(), result)
    assert drawn.width == 400 and drawn.height > 300
    band = np.asarray(drawn)[300:]
    for colour in (PALETTE[0], PALETTE[1]):  # a swatch of each label's colour in the legend
        assert (band == np.array(colour, dtype=np.uint8)).all(axis=-1).sum() > 20


def test_mask_is_blended_inside_and_nothing_outside() -> None:
    mask = np.zeros((300, 400), dtype=bool)
    mask[100:200, 150:250] = True
    segment = Segment(
        label="blob",
        box=Box(x_min=140, y_min=90, x_max=260, y_max=210),
        loc_bins=(0, 0, 1, 1),
        codes=(0,) * 16,
        mask=mask,
    )
    result = Segments(
        image_width=400, image_height=300, prompt="segment blob", model="m", raw_text="", objects=(segment,),
        masks_decoded=True,
    )  # fmt: skip
    drawn = np.asarray(annotate(white(), result))
    expected = np.round(np.array(WHITE) * (1 - MASK_ALPHA) + np.array(PALETTE[0]) * MASK_ALPHA)
    assert tuple(drawn[150, 200]) == tuple(expected.astype(np.uint8))  # inside the mask
    assert tuple(drawn[95, 200]) == WHITE  # inside the box, outside the mask
    assert tuple(drawn[50, 50]) == WHITE


def test_downscaled_drawing_keeps_geometry_in_proportion() -> None:
    result = detections("<loc0205><loc0256><loc0818><loc0767> cat", width=4000, height=3000)
    drawn = annotate(white(4000, 3000), result, max_side=400)
    assert drawn.width == 400
    x0, y0, _, y1 = (v / 10 for v in result.objects[0].box.xyxy)
    assert drawn.getpixel((int(x0), int((y0 + y1) / 2))) == PALETTE[0]


def test_a_result_for_another_image_is_refused() -> None:
    with pytest.raises(ValueError, match="annotate the image the tool was given"):
        annotate(white(10, 10), detections("", width=400, height=300))


def test_ten_thousand_labels_draw_a_bounded_legend() -> None:
    from tools import parse_detections
    from tools.annotate import MAX_DRAWN_OBJECTS, MAX_LEGEND_LABELS

    answer = " ; ".join(f"<loc0100><loc0100><loc0900><loc0900> label {i}" for i in range(250))
    parsed = parse_detections(answer, width=640, height=480)  # the parser reads at most 256 objects
    result = parsed.model_copy(update={"objects": tuple(parsed.objects) * 40})  # a result built elsewhere
    assert len(result.objects) == 10_000
    drawn = annotate(Image.new("RGB", (640, 480)), result, max_side=768)  # its CPU time: benchmarks/budgets.py
    assert drawn.width == 640 and drawn.height < 480 + 40 * (MAX_LEGEND_LABELS + 3)
    assert MAX_DRAWN_OBJECTS == 100


def test_a_small_image_is_enlarged_to_the_minimum_side_with_its_boxes() -> None:
    result = detections("<loc0205><loc0256><loc0818><loc0767> cat", width=64, height=48)
    drawn = annotate(white(64, 48), result, min_side=512, max_side=1024)
    assert drawn.width == 512 and drawn.height > 384  # 8 times, the legend band below
    x0, y0, x1, y1 = (v * 8 for v in result.objects[0].box.xyxy)
    assert drawn.getpixel((int(x0) + 1, int((y0 + y1) / 2))) == PALETTE[0]  # the left edge, where it scales to
    assert drawn.getpixel((int((x0 + x1) / 2), int((y0 + y1) / 2))) == WHITE
    assert annotate(white(64, 48), result, min_side=512, max_side=256).width == 256  # the maximum wins
    assert annotate(white(), detections("<loc0205><loc0256><loc0818><loc0767> cat"), min_side=100).width == 400
