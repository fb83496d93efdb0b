"""Table tests of the detection and segmentation parsers, with real PaliGemma outputs."""

from __future__ import annotations

import pytest

from tools import OutputParseError, parse_detections, parse_segments
from tools.errors import InvalidInputError

SEGS_A = "".join(f"<seg{c:03d}>" for c in range(16))
SEGS_B = "".join(f"<seg{c:03d}>" for c in range(100, 116))


# paligemma2-3b-mix-448, `detect road sign` (github.com/sevval12345/paligemma2-analysis-and-experiments, README)
ROAD_SIGNS = (
    "<loc0204><loc0366><loc0469><loc0558> road sign ; <loc0204><loc0162><loc0459><loc0357> road sign ; "
    "<loc0215><loc0710><loc0477><loc0879> road sign ; <loc0558><loc0551><loc0648><loc0692> road sign"
)
ROAD_SIGN_BOXES = [  # at 1000 x 750 (bins / 1023 x side, big_vision's evaluator)
    ("road sign", (357.77, 149.56, 545.45, 343.84)),
    ("road sign", (158.36, 149.56, 348.97, 336.51)),
    ("road sign", (694.04, 157.62, 859.24, 349.71)),
    ("road sign", (538.61, 409.09, 676.44, 475.07)),
]
# big_vision's PaliGemma demo space (huggingface.co/spaces/big-vision/paligemma, paligemma_parse.py EXAMPLE_STRING)
BOWIE = (
    "<loc0000><loc0000><loc0930><loc1012> <seg114><seg074><seg106><seg044><seg030><seg027><seg119><seg119>"
    "<seg120><seg117><seg082><seg082><seg051><seg005><seg125><seg097> wall ; <loc0722><loc0047><loc0895><loc0378> "
    "<seg068><seg114><seg014><seg037><seg029><seg063><seg048><seg104><seg010><seg056><seg021><seg056><seg019>"
    "<seg017><seg102><seg121> car ; <loc0180><loc0596><loc0782><loc0961> <seg026><seg028><seg028><seg026><seg104>"
    "<seg026><seg029><seg022><seg000><seg068><seg092><seg125><seg003><seg127><seg121><seg043> david bowie ; "
    "<loc0234><loc0043><loc0736><loc0289> <seg068><seg008><seg091><seg064><seg007><seg055><seg017><seg090><seg042>"
    "<seg052><seg068><seg086><seg001><seg014><seg093><seg052> david bowie ; <loc0230><loc0300><loc0736><loc0499> "
    "<seg073><seg011><seg114><seg059><seg048><seg097><seg091><seg022><seg007><seg036><seg091><seg022><seg016>"
    "<seg009><seg003><seg036> david bowie"
)
BOWIE_OBJECTS = [
    ("wall", (114, 74, 106, 44, 30, 27, 119, 119, 120, 117, 82, 82, 51, 5, 125, 97)),
    ("car", (68, 114, 14, 37, 29, 63, 48, 104, 10, 56, 21, 56, 19, 17, 102, 121)),
    ("david bowie", (26, 28, 28, 26, 104, 26, 29, 22, 0, 68, 92, 125, 3, 127, 121, 43)),
    ("david bowie", (68, 8, 91, 64, 7, 55, 17, 90, 42, 52, 68, 86, 1, 14, 93, 52)),
    ("david bowie", (73, 11, 114, 59, 48, 97, 91, 22, 7, 36, 91, 22, 16, 9, 3, 36)),
]

# (text, width, height, [(label, (x_min, y_min, x_max, y_max) rounded to 0.01)], [issue reasons])
DETECTIONS = [
    pytest.param(
        "<loc0051><loc0309><loc0708><loc0646> shoe",
        640,
        480,
        [("shoe", (193.31, 23.93, 404.14, 332.20))],
        [],
        id="real-paligemma-3b-pt-224-shoe",  # transformers integration test output
    ),
    pytest.param(
        " <loc0199><loc0152><loc1021><loc0744> person",
        400,
        406,
        [("person", (59.43, 78.98, 290.91, 405.21))],  # notebook printed [59, 79, 291, 405]
        [],
        id="real-paligemma2-3b-mix-224-person-leading-space",
    ),
    pytest.param(
        ROAD_SIGNS,
        1000,
        750,
        ROAD_SIGN_BOXES,
        [],
        id="real-paligemma2-3b-mix-448-four-road-signs",  # published without its image's size
    ),
    pytest.param(
        "<loc0222><loc0113><loc0933><loc0824> cat",
        224,
        224,
        [("cat", (24.74, 48.61, 180.43, 204.29))],
        [],
        id="real-paligemma-3b-pt-224-cat",  # published without its image's size
    ),
    pytest.param(
        ROAD_SIGNS + "<eos><pad><pad>",
        1000,
        750,
        ROAD_SIGN_BOXES,
        [],
        id="decoded-keeping-special-tokens-eos-and-padding",  # not part of the last label
    ),
    pytest.param(
        "<image><image><bos>detect shoe\n<loc0051><loc0309><loc0708><loc0646> shoe<eos>",
        640,
        480,
        [("shoe", (193.31, 23.93, 404.14, 332.20))],
        ["text without location tokens"],
        id="decoded-keeping-special-tokens-with-the-prompt",
    ),
    pytest.param(
        "detect shoe\n<loc0051><loc0309><loc0708><loc0646> shoe",
        640,
        480,
        [("shoe", (193.31, 23.93, 404.14, 332.20))],
        ["text without location tokens"],
        id="decoded-with-the-prompt-echoed",
    ),
    pytest.param(
        "<loc0000><loc0000><loc1023><loc1023> cat ; <loc0100><loc0200><loc0300><loc0400> dog",
        1023,
        1023,
        [("cat", (0, 0, 1023, 1023)), ("dog", (200, 100, 400, 300))],
        [],
        id="two-objects-y-first-order",
    ),
    pytest.param(
        "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0512><loc0512><loc1023><loc1023> cat",
        200,
        100,
        [("cat", (0, 0, 100.10, 50.05)), ("cat", (100.10, 50.05, 200, 100))],
        [],
        id="same-label-two-instances-non-square",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500>  traffic light ;"
        "<loc0600><loc0600><loc0900><loc0900> Jack's 2nd-hand bike",
        1023,
        1023,
        [("traffic light", (10, 10, 500, 500)), ("Jack's 2nd-hand bike", (600, 600, 900, 900))],
        [],
        id="labels-with-spaces-apostrophe-digits-hyphen",
    ),
    pytest.param(
        "<loc0010> <loc0010> <loc0500> <loc0500> cat",
        1023,
        1023,
        [("cat", (10, 10, 500, 500))],
        [],
        id="spaces-between-tokens",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500> cat<loc0600><loc0600><loc0900><loc0900> dog",
        1023,
        1023,
        [("cat", (10, 10, 500, 500)), ("dog", (600, 600, 900, 900))],
        [],
        id="missing-separator-still-two-objects",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500> cat ; <loc0600><loc0600>",
        1023,
        1023,
        [("cat", (10, 10, 500, 500))],
        ["2 location tokens where a box has 4"],
        id="truncated-last-group",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500><loc0600> cat",
        1023,
        1023,
        [],
        ["5 location tokens where a box has 4"],
        id="extra-location-token",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500><loc0600><loc0600><loc0900><loc0900>",
        1023,
        1023,
        [("", (10, 10, 500, 500)), ("", (600, 600, 900, 900))],
        [
            "no label after the codes: kept without a label (several or no objects were asked for)",
            "no label after the codes: kept without a label (several or no objects were asked for)",
        ],
        id="two-boxes-without-labels-or-separator",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500><loc0600><loc0600><loc0900><loc0900> cat",
        1023,
        1023,
        [("", (10, 10, 500, 500)), ("cat", (600, 600, 900, 900))],
        ["no label after the codes: kept without a label (several or no objects were asked for)"],
        id="an-unlabelled-box-before-a-labelled-one",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500>",
        1023,
        1023,
        [("", (10.0, 10.0, 500.0, 500.0))],
        ["no label after the codes: kept without a label (several or no objects were asked for)"],
        id="missing-label-kept-unlabelled",
    ),
    pytest.param(
        "<loc0500><loc0010><loc0100><loc0500> cat",
        1023,
        1023,
        [],
        ["empty box (max edge not beyond min edge)"],
        id="inverted-box",
    ),
    pytest.param(
        "<loc0010><loc0010><loc1500><loc0500> cat",
        1023,
        1023,
        [],
        ["location bin out of range 0..1023"],
        id="bin-out-of-range",
    ),
    pytest.param(
        "<loc0010><loc0010><loc05><loc0500> cat",
        1023,
        1023,
        [],
        ["malformed token(s) <loc05>"],
        id="malformed-token",
    ),
    pytest.param("", 100, 100, [], [], id="empty-answer-means-nothing-found"),
    pytest.param("no", 100, 100, [], ["text without location tokens"], id="words-instead-of-boxes"),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A} cat",
        1023,
        1023,
        [],
        ["16 segmentation tokens in a detection answer"],
        id="segmentation-answer-given-to-detection-parser",
    ),
]


@pytest.mark.parametrize(("text", "width", "height", "expected", "issues"), DETECTIONS)
def test_parse_detections(
    text: str,
    width: int,
    height: int,
    expected: list[tuple[str, tuple[float, float, float, float]]],
    issues: list[str],
) -> None:
    result = parse_detections(text, width=width, height=height)
    got = [(d.label, tuple(round(v, 2) for v in d.box.xyxy)) for d in result.objects]
    assert got == [(label, tuple(pytest.approx(v, abs=0.01) for v in box)) for label, box in expected]
    assert [i.reason for i in result.issues] == issues
    assert result.raw_text == text
    assert (result.image_width, result.image_height) == (width, height)
    for detection in result.objects:
        box = detection.box
        assert 0 <= box.x_min < box.x_max <= width and 0 <= box.y_min < box.y_max <= height


def test_detection_derived_forms() -> None:
    result = parse_detections(" <loc0199><loc0152><loc1021><loc0744> person", width=400, height=406)
    (person,) = result.objects
    assert person.loc_bins == (199, 152, 1021, 744)
    assert [round(v) for v in person.box.xyxy] == [59, 79, 291, 405]
    x, y, w, h = person.box.coco_xywh
    assert (round(x), round(y), round(w), round(h)) == (59, 79, 231, 326)
    assert person.box.normalized_xyxy(image_width=400, image_height=406) == pytest.approx(
        (152 / 1023, 199 / 1023, 744 / 1023, 1021 / 1023)
    )
    assert person.box.to_polygon().area == pytest.approx(person.box.width * person.box.height)


def test_strict_raises_our_error_with_the_raw_answer() -> None:
    with pytest.raises(OutputParseError, match="2 location tokens"):
        parse_detections("<loc0001><loc0002>", width=10, height=10, strict=True)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1)])
def test_nonpositive_image_size_is_invalid_input(width: int, height: int) -> None:
    with pytest.raises(InvalidInputError):
        parse_detections("", width=width, height=height)


SEGMENTS = [
    pytest.param(BOWIE, BOWIE_OBJECTS, [], id="real-big-vision-demo-five-objects"),
    pytest.param(BOWIE + "<eos>", BOWIE_OBJECTS, [], id="real-five-objects-decoded-with-eos"),
    pytest.param(
        f"<loc0000><loc0000><loc0930><loc1012>{SEGS_A}<eos>",
        [("", tuple(range(16)))],
        ["no label after the codes: kept without a label (several or no objects were asked for)"],
        id="no-label-then-eos",  # <eos> is no label
    ),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A} cat",
        [("cat", tuple(range(16)))],
        [],
        id="one-object",
    ),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500> {SEGS_A} cat ; <loc0600><loc0600><loc0900><loc0900> {SEGS_B} dog",
        [("cat", tuple(range(16))), ("dog", tuple(range(100, 116)))],
        [],
        id="two-objects-with-spaces",
    ),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A[: 10 * 8]} cat",
        [],
        ["10 segmentation tokens where a mask has 16"],
        id="truncated-codes",
    ),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A} cat ; <loc0600><loc0600><loc0900><loc0900>{SEGS_B[:40]}",
        [("cat", tuple(range(16)))],
        ["5 segmentation tokens where a mask has 16"],
        id="truncated-last-object",
    ),
    pytest.param(
        "<loc0010><loc0010><loc0500><loc0500> cat",
        [],
        ["0 segmentation tokens where a mask has 16"],
        id="detection-answer-given-to-segmentation-parser",
    ),
    pytest.param(
        f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A[:-8]}<seg200> cat",
        [],
        ["segmentation code out of range 0..127"],
        id="code-out-of-range",
    ),
]


@pytest.mark.parametrize(("text", "expected", "issues"), SEGMENTS)
def test_parse_segments_without_decoder(
    text: str, expected: list[tuple[str, tuple[int, ...]]], issues: list[str]
) -> None:
    result = parse_segments(text, width=1023, height=1023)
    assert [(s.label, s.codes) for s in result.objects] == expected
    assert [i.reason for i in result.issues] == issues
    assert result.masks_decoded is False
    assert all(s.mask is None and s.area_px is None and s.outline_xy is None for s in result.objects)


def test_issue_text_is_an_excerpt_and_raw_text_stays_whole() -> None:
    text = "<loc0077>" * 201  # not a whole number of boxes: one malformed group
    result = parse_detections(text, width=10, height=10)
    (issue,) = result.issues
    assert issue.reason == "201 location tokens where a box has 4"
    assert issue.text.startswith("<loc0077>" * 13) and issue.text.endswith("(+1689 characters)")
    assert result.raw_text == text


@pytest.mark.parametrize(
    ("asked", "label", "reason"),
    [
        pytest.param(["cow"], "cow", "labelled 'cow', the one object asked for", id="one-name-asked"),
        pytest.param("cow", "cow", "labelled 'cow', the one object asked for", id="one-name-as-a-string"),
        pytest.param(["cow", "dog"], "", "kept without a label", id="two-names-asked"),
        pytest.param(None, "", "kept without a label", id="names-not-given"),
    ],
)
def test_segment_without_a_label_keeps_its_box_and_codes(asked: list[str] | None, label: str, reason: str) -> None:
    # `segment cow`, answered with box and codes but no label: big_vision treats the label as optional.
    text = f"<loc0010><loc0010><loc0500><loc0500>{SEGS_A}"
    result = parse_segments(text, width=1023, height=1023, objects=asked)
    (segment,) = result.objects
    assert (segment.label, segment.codes) == (label, tuple(range(16)))
    assert segment.box.xyxy == pytest.approx((10.0, 10.0, 500.0, 500.0), abs=0.01)
    (issue,) = result.issues
    assert reason in issue.reason and issue.text.startswith(text[:100])
    detections = parse_detections("<loc0010><loc0010><loc0500><loc0500> ; ", width=10, height=10, objects=asked)
    assert [d.label for d in detections.objects] == [label]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<" * 200_000, id="run-of-less-than"),
        pytest.param("<loc" * 50_000, id="run-of-loc-prefixes"),
        pytest.param("<loc0001> cat " * 20_000, id="many-short-groups"),
        pytest.param("x" * 1_000_000, id="a-megabyte-of-label"),
    ],
)
def test_long_garbage_parses_to_reported_issues(text: str) -> None:
    """Each long run is read (linearly: benchmarks/budgets.py times it) into issues, never into objects."""
    result = parse_detections(text, width=100, height=100)
    assert result.objects == () and result.issues and result.raw_text == text
