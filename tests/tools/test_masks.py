"""Mask pasting (big_vision's evaluator), exact outlines, COCO RLE and areas."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as coco_mask

from tools.errors import InvalidInputError
from tools.masks import coco_rle_to_mask, mask_area, mask_outline, mask_to_coco_rle, paste_mask

# --- paste_mask ------------------------------------------------------------------------------


def pillow_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BILINEAR resampling along one axis as an (out, in) matrix, written out from its algorithm.

    Half-pixel centres; a triangle filter whose support grows with the scale when shrinking
    (antialiasing); the weights clipped at the border renormalised to sum to one.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle's support is 1 source pixel, widened when shrinking
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        x = np.arange(lo, hi)
        weights = np.clip(1.0 - np.abs((x - centre + 0.5) / filter_scale), 0.0, None)
        matrix[i, lo:hi] = weights / weights.sum()
    return matrix


def reference_resize(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Horizontal pass then vertical pass, each rounded to float32 like Pillow's mode "F" intermediate image."""
    across = (mask.astype(np.float64) @ pillow_bilinear_matrix(mask.shape[1], width).T).astype(np.float32)
    result: np.ndarray = (pillow_bilinear_matrix(mask.shape[0], height) @ across.astype(np.float64)).astype(np.float32)
    return result


def big_vision_paste(mask64: np.ndarray, bins_yxyx: tuple[int, int, int, int], h: int, w: int) -> np.ndarray:
    """The evaluator's steps, transcribed: bins / 1023, int() of pixel corners, Pillow resize, > 0."""
    y1, x1, y2, x2 = (b / 1023 for b in bins_yxyx)
    y1, x1, y2, x2 = map(int, (y1 * h, x1 * w, y2 * h, x2 * w))
    out = np.zeros((h, w), bool)
    if x2 <= x1 or y2 <= y1:
        return out
    resized = np.asarray(Image.fromarray(mask64).resize([x2 - x1, y2 - y1], resample=Image.Resampling.BILINEAR))
    out[y1:y2, x1:x2] = resized > 0.0
    return out


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(200, 150, id="enlarge"),
        pytest.param(20, 13, id="shrink-antialiased"),
        pytest.param(97, 31, id="enlarge-x-shrink-y"),
        pytest.param(64, 64, id="same-size"),
        pytest.param(1, 1, id="one-pixel"),
    ],
)
def test_pillow_bilinear_is_the_antialiased_triangle_filter(width: int, height: int) -> None:
    # The resize behind paste_mask (and big_vision's numbers), pinned down independently of Pillow's docs.
    mask = np.random.default_rng(width * height).uniform(-1, 1, (64, 64)).astype(np.float32)
    pillow = np.asarray(Image.fromarray(mask).resize((width, height), resample=Image.Resampling.BILINEAR))
    np.testing.assert_allclose(pillow, reference_resize(mask, width, height), rtol=0, atol=1e-6)


def test_paste_agrees_with_the_reference_resize() -> None:
    rng = np.random.default_rng(7)
    mask = rng.uniform(-1, 1, (64, 64)).astype(np.float32)
    got = paste_mask(mask, (13.7, 5.2, 120.9, 44.99), width=160, height=50)
    expected = reference_resize(mask, 120 - 13, 44 - 5)
    clear = np.abs(expected) > 1e-4  # leave out pixels whose sign is a rounding question
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(got[5:44, 13:120][clear], (expected > 0)[clear])
    assert not got[:5].any() and not got[44:].any() and not got[:, :13].any() and not got[:, 120:].any()


def test_paste_matches_big_vision_evaluator() -> None:
    rng = np.random.default_rng(8)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        y1, y2 = sorted(int(v) for v in rng.integers(0, 1024, 2))
        x1, x2 = sorted(int(v) for v in rng.integers(0, 1024, 2))
        mask64 = rng.uniform(-1, 1, (64, 64)).astype(np.float32)
        box = (x1 / 1023 * w, y1 / 1023 * h, x2 / 1023 * w, y2 / 1023 * h)
        got = paste_mask(mask64, box, width=w, height=h)
        np.testing.assert_array_equal(got, big_vision_paste(mask64, (y1, x1, y2, x2), h, w))


LEFT_HALF = np.where(np.arange(64) < 32, 1.0, -1.0)[None, :].repeat(64, axis=0).astype(np.float32)
ALL_IN = np.ones((64, 64), np.float32)


def _filled(height: int, width: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    out[y1:y2, x1:x2] = True
    return out


@pytest.mark.parametrize(
    ("mask64", "box", "expected"),
    [
        # Left half of the mask lands on the left half of a 40-wide box.
        pytest.param(LEFT_HALF, (10, 20, 50, 40), _filled(60, 100, 20, 40, 10, 30), id="left-half"),
        # Corners are truncated, not rounded: (10.9, 20.9, 50.99, 40.5) is the box above.
        pytest.param(LEFT_HALF, (10.9, 20.9, 50.99, 40.5), _filled(60, 100, 20, 40, 10, 30), id="truncated"),
        pytest.param(ALL_IN, (60, 0, 100, 60), _filled(60, 100, 0, 60, 60, 100), id="touching-right-edges"),
        pytest.param(ALL_IN, (0, 0, 100, 60), _filled(60, 100, 0, 60, 0, 100), id="whole-image"),
        pytest.param(ALL_IN, (-5.5, -3, 120, 70), _filled(60, 100, 0, 60, 0, 100), id="clipped-to-image"),
        pytest.param(ALL_IN, (3.2, 4, 4.9, 10), _filled(60, 100, 4, 10, 3, 4), id="one-column-wide"),
        pytest.param(ALL_IN, (10.2, 5, 10.9, 30), _filled(60, 100, 0, 0, 0, 0), id="empty-after-truncation"),
        pytest.param(ALL_IN, (30, 5, 30, 30), _filled(60, 100, 0, 0, 0, 0), id="zero-width"),
        pytest.param(ALL_IN, (40, 30, 20, 10), _filled(60, 100, 0, 0, 0, 0), id="inverted"),
        pytest.param(ALL_IN, (150, 5, 200, 30), _filled(60, 100, 0, 0, 0, 0), id="outside-image"),
        pytest.param(-ALL_IN, (0, 0, 100, 60), _filled(60, 100, 0, 0, 0, 0), id="mask-all-negative"),
    ],
)
def test_paste_mask(mask64: np.ndarray, box: tuple[float, float, float, float], expected: np.ndarray) -> None:
    got = paste_mask(mask64, box, width=100, height=60)
    assert got.dtype == np.bool_ and got.shape == (60, 100)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("mask64", "box", "width", "height"),
    [
        pytest.param(ALL_IN, (0, 0, 10, 10), 0, 10, id="zero-width-image"),
        pytest.param(ALL_IN, (0, float("nan"), 10, 10), 10, 10, id="nan-corner"),
        pytest.param(ALL_IN, (0, 0, float("inf"), 10), 10, 10, id="infinite-corner"),
        pytest.param(ALL_IN[None], (0, 0, 10, 10), 10, 10, id="batched-mask"),
        pytest.param(np.zeros((0, 64), np.float32), (0, 0, 10, 10), 10, 10, id="empty-mask"),
    ],
)
def test_paste_mask_rejects(
    mask64: np.ndarray, box: tuple[float, float, float, float], width: int, height: int
) -> None:
    with pytest.raises(InvalidInputError):
        paste_mask(mask64, box, width=width, height=height)


# --- mask_outline --------------------------------------------------------------------------


def union_of_runs(mask: np.ndarray) -> shapely.Geometry:
    """The slow, obviously right outline: the union of one rectangle per horizontal run of set pixels."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return shapely.union_all(shapely.box(starts, rows, ends, rows + 1))


def from_rows(*rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def assert_exact_outline(mask: np.ndarray, outline: shapely.Geometry) -> None:
    assert outline.is_valid, shapely.is_valid_reason(outline)
    assert outline.area == mask.sum()
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    inside = shapely.contains_xy(outline, xs + 0.5, ys + 0.5)
    np.testing.assert_array_equal(inside, mask)
    if not mask.any():
        assert outline.is_empty
        return
    assert outline.equals(union_of_runs(mask))
    for polygon in shapely.get_parts(outline):
        assert polygon.exterior.is_ccw and not any(ring.is_ccw for ring in polygon.interiors)


@pytest.mark.parametrize(
    ("mask", "parts", "holes"),
    [
        pytest.param(from_rows("....", "..#.", "...."), 1, 0, id="single-pixel"),
        pytest.param(from_rows("#####", "#####", "##.##", "#####", "#####"), 1, 1, id="hole"),
        pytest.param(from_rows("##..", "##..", "...#"), 2, 0, id="two-parts-diagonal"),
        pytest.param(from_rows("#.", ".#"), 2, 0, id="diagonal-pixels"),
        pytest.param(from_rows(".#", "#."), 2, 0, id="anti-diagonal-pixels"),
        pytest.param(from_rows("###", "#.#", "##."), 1, 1, id="hole-touching-outside-at-corner"),
        pytest.param(from_rows("####", "#.##", "##.#", "####"), 1, 2, id="holes-touching-each-other"),
        pytest.param(from_rows("###.", "#.#.", "###.", "...#"), 2, 1, id="ring-and-diagonal-pixel"),
        pytest.param(
            from_rows("#######", "#.....#", "#.....#", "#..#..#", "#.....#", "#.....#", "#######"),
            2,
            1,
            id="island-in-hole",
        ),
        pytest.param(from_rows(".#.", "#.#", ".#."), 4, 0, id="diamond-of-diagonals"),
        pytest.param(np.indices((6, 6)).sum(axis=0) % 2 == 0, 18, 0, id="checkerboard"),
        pytest.param(np.ones((3, 5), bool), 1, 0, id="full-touching-all-edges"),
        pytest.param(
            from_rows("##.##", "#...#", "..#..", "#...#", "##.##"),
            5,
            0,
            id="corners-and-centre",
        ),
    ],
)
def test_mask_outline_shapes(mask: np.ndarray, parts: int, holes: int) -> None:
    outline = mask_outline(mask)
    assert_exact_outline(mask, outline)
    polygons = list(shapely.get_parts(outline))
    assert len(polygons) == parts
    assert sum(len(p.interiors) for p in polygons) == holes


def test_single_pixel_outline_is_its_square() -> None:
    mask = np.zeros((5, 7), bool)
    mask[2, 3] = True  # row 2, column 3
    outline = mask_outline(mask)
    assert isinstance(outline, shapely.Polygon)
    assert outline.equals(shapely.box(3, 2, 4, 3))


def test_outline_is_offset_into_image_coordinates() -> None:
    mask = np.zeros((400, 300), np.uint8)
    mask[100:150, 200:260] = 1
    mask[120:130, 220:230] = 0
    outline = mask_outline(mask)
    assert outline.bounds == (200.0, 100.0, 260.0, 150.0)
    assert outline.equals(shapely.box(200, 100, 260, 150).difference(shapely.box(220, 120, 230, 130)))


def test_empty_mask_gives_empty_polygon() -> None:
    outline = mask_outline(np.zeros((4, 4), bool))
    assert isinstance(outline, shapely.Polygon) and outline.is_empty


def test_large_smooth_mask() -> None:
    # A pasted mask of the kind the decoder makes: big, smooth, with a hole and a separate blob.
    ys, xs = np.mgrid[:500, :700]
    r2 = (xs - 300) ** 2 + (ys - 250) ** 2
    mask = ((r2 < 200**2) & (r2 > 60**2)) | ((xs - 620) ** 2 + (ys - 80) ** 2 < 40**2)
    outline = mask_outline(mask)
    assert_exact_outline(mask, outline)
    assert isinstance(outline, shapely.MultiPolygon) and len(outline.geoms) == 2


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.ones((3, 3), np.float32), id="float"),
        pytest.param(np.ones((1, 3, 3), bool), id="three-dimensional"),
        pytest.param(np.ones(3, bool), id="one-dimensional"),
    ],
)
def test_bad_masks_raise(mask: np.ndarray) -> None:
    for function in (mask_outline, mask_area, mask_to_coco_rle):
        with pytest.raises(InvalidInputError):
            function(mask)


masks_strategy = arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=400, deadline=None)
@given(masks_strategy)
def test_outline_property(mask: np.ndarray) -> None:
    outline = mask_outline(mask)
    assert_exact_outline(mask, outline)
    assert mask_area(mask) == outline.area


# --- COCO RLE and area -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "counts"),
    [
        pytest.param(from_rows(".##", "..#"), [2, 1, 1, 2], id="column-major"),
        pytest.param(from_rows("#"), [0, 1], id="starts-with-a-set-pixel"),
        pytest.param(np.zeros((2, 2), bool), [4], id="all-clear"),
        pytest.param(np.ones((2, 3), bool), [0, 6], id="all-set"),
        pytest.param(np.zeros((0, 5), bool), [], id="no-pixels"),
    ],
)
def test_coco_rle_known(mask: np.ndarray, counts: list[int]) -> None:
    rle = mask_to_coco_rle(mask)
    assert rle == {"size": [mask.shape[0], mask.shape[1]], "counts": counts}
    np.testing.assert_array_equal(coco_rle_to_mask(rle), mask)
    assert all(type(c) is int for c in rle["counts"])  # JSON-ready, not numpy integers


def _pycocotools_view(rle: dict[str, list[int]]) -> dict[str, Any]:
    h, w = rle["size"]
    compressed: dict[str, Any] = coco_mask.frPyObjects(rle, h, w)
    return compressed


# pycocotools' Cython decode trips numpy 2's copy-keyword deprecation; that is its problem, not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@settings(max_examples=300, deadline=None)
@given(masks_strategy)
def test_coco_rle_agrees_with_pycocotools(mask: np.ndarray) -> None:
    rle = mask_to_coco_rle(mask)
    assert sum(rle["counts"]) == mask.size
    np.testing.assert_array_equal(coco_rle_to_mask(rle), mask)
    compressed = _pycocotools_view(rle)
    np.testing.assert_array_equal(coco_mask.decode(compressed), mask.astype(np.uint8))
    assert int(coco_mask.area(compressed)) == mask_area(mask) == int(mask.sum())
    # Same runs as pycocotools' own encoder.
    assert compressed["counts"] == coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


@pytest.mark.parametrize(
    "rle",
    [
        pytest.param({"size": [2, 2], "counts": [1, 2]}, id="too-few-pixels"),
        pytest.param({"size": [2, 2], "counts": [3, 2]}, id="too-many-pixels"),
        pytest.param({"size": [2, 2], "counts": [5, -1]}, id="negative-run"),
        pytest.param({"size": [2, 2], "counts": "04"}, id="compressed-string"),
        pytest.param({"counts": [4]}, id="no-size"),
        pytest.param({"size": [2], "counts": [2]}, id="one-number-size"),
        pytest.param({"size": [2, 2], "counts": [[1, 3]]}, id="nested-counts"),
    ],
)
def test_bad_rle_raises(rle: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        coco_rle_to_mask(rle)


def test_mask_area_counts_nonzero_integers() -> None:
    assert mask_area(np.array([[0, 2], [1, 0]], np.uint8)) == 2
    assert mask_area(np.zeros((3, 3), bool)) == 0
