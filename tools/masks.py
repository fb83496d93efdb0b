"""Decoded 64x64 masks to image-sized masks, exact outlines, COCO RLE and areas.

Coordinates are pixels of the original image: origin top-left, x right, y down, and pixel
(col, row) covers the square [col, col + 1] x [row, row + 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from tools.errors import InvalidInputError
from tools.pixel_outline import trace_polygons

__all__ = ["coco_rle_to_mask", "mask_area", "mask_outline", "mask_to_coco_rle", "paste_mask"]

BoolMask = NDArray[np.bool_]


def paste_mask(mask64: ArrayLike, box_xyxy: tuple[float, float, float, float], *, width: int, height: int) -> BoolMask:
    """The (height, width) bool mask of `mask64` stretched over the pixel box, as big_vision's evaluator does it.

    The box corners are truncated with `int()` (as the evaluator does with `bin / 1023 * side`)
    and clipped to the image; a box left empty gives an empty mask. The float mask is resized
    to the box with Pillow's BILINEAR filter on a mode "F" image, thresholded at > 0 and placed
    at [y1:y2, x1:x2]. That resize is the evaluator's own call (big_vision
    `evaluators/proj/paligemma/transfers/segmentation.py`: `PIL.Image.fromarray(m64).resize(
    [x2 - x1, y2 - y1], resample=PIL.Image.BILINEAR)` on the float32 decoder output), so with
    the same Pillow the result is identical, not an approximation. What it computes (pinned by
    the tests against a numpy transcription): a triangle filter on half-pixel centres, widened by
    the scale factor when shrinking (antialiased, the same kind of filter as
    `tf.image.resize(..., "bilinear", antialias=True)`), weights cut at the border renormalised,
    horizontal pass then vertical, accumulated in double and stored as float32 in between.
    Boxes from PaliGemma's location tokens always lie inside the image, so the clipping only
    matters for boxes from elsewhere: the mask is then fitted to the clipped box.
    """
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"image size must be positive, got width={width}, height={height}")
    values = np.asarray(mask64)
    if values.ndim != 2 or values.size == 0:
        raise InvalidInputError(f"mask64 must be a non-empty 2-D array, got shape {values.shape}")
    if values.dtype.kind not in "fiub":
        raise InvalidInputError(f"mask64 must be numeric, got dtype {values.dtype}")
    if len(box_xyxy) != 4 or not all(math.isfinite(v) for v in box_xyxy):
        raise InvalidInputError(f"box_xyxy must be four finite numbers, got {box_xyxy!r}")

    def clip(value: float, side: int) -> int:
        return min(max(int(value), 0), side)

    x1, y1, x2, y2 = (clip(v, side) for v, side in zip(box_xyxy, (width, height, width, height), strict=True))
    out = np.zeros((height, width), dtype=np.bool_)
    if x2 <= x1 or y2 <= y1:
        return out
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))
    resized = np.asarray(image.resize((x2 - x1, y2 - y1), resample=Image.Resampling.BILINEAR))
    out[y1:y2, x1:x2] = resized > 0.0
    return out


def mask_area(mask: ArrayLike) -> int:
    """The number of pixels set in the mask."""
    return int(np.count_nonzero(_as_bool_mask(mask)))


def mask_outline(mask: ArrayLike) -> shapely.Polygon | shapely.MultiPolygon:
    """The exact pixel-edge outline of the mask, holes and separate parts kept; always valid, empty if nothing is set.

    Pixels that touch only at a corner become separate polygons (or a hole touching its shell
    at that corner), which is what keeps the result valid. Shells come counter-clockwise and
    holes clockwise in the plain (x, y) coordinates, GeoJSON's convention; vertices sit only
    at corners (no points along straight edges).
    """
    m = _as_bool_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return shapely.Polygon()
    cols = np.flatnonzero(m.any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    # Trace only the bounding region, then shift back to image coordinates.
    polygons = trace_polygons(m[r0 : int(rows[-1]) + 1, c0 : int(cols[-1]) + 1], x_offset=c0, y_offset=r0)
    if len(polygons) == 1:
        return polygons[0]
    return shapely.MultiPolygon(list(polygons))


def mask_to_coco_rle(mask: ArrayLike) -> dict[str, list[int]]:
    """COCO's uncompressed RLE `{"size": [height, width], "counts": [...]}`: column-major runs, zeros first."""
    m = _as_bool_mask(mask)
    height, width = m.shape
    flat = m.ravel(order="F")
    if flat.size == 0:
        return {"size": [height, width], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)  # runs always start with the zeros, even when there are none
    return {"size": [height, width], "counts": counts}


def coco_rle_to_mask(rle: Mapping[str, Any]) -> BoolMask:
    """The (height, width) bool mask of a COCO uncompressed RLE; InvalidInputError if the runs do not fit the size."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts_raw = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"not a COCO RLE with 'size' [height, width] and 'counts': {exc}") from exc
    if isinstance(counts_raw, str | bytes):
        raise InvalidInputError("compressed COCO RLE (string counts) is not supported; give the uncompressed counts")
    counts = np.asarray(counts_raw, dtype=np.int64)
    if counts.ndim != 1 or height < 0 or width < 0 or (counts.size and counts.min() < 0):
        raise InvalidInputError("COCO RLE counts must be a list of non-negative integers and the size non-negative")
    if int(counts.sum()) != height * width:
        raise InvalidInputError(f"COCO RLE counts sum to {int(counts.sum())}, not height * width = {height * width}")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def _as_bool_mask(mask: ArrayLike) -> BoolMask:
    """The mask as a 2-D bool array; bool or integer input (nonzero is set), InvalidInputError otherwise."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InvalidInputError(f"a mask must be a 2-D array (height, width), got shape {array.shape}")
    if array.dtype.kind not in "biu":
        # A float mask would need a threshold, and guessing one silently changes the result.
        raise InvalidInputError(f"a mask must be bool or integer, got dtype {array.dtype}; threshold it first")
    return array.astype(np.bool_, copy=False)
