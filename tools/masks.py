"""Decoded 64x64 masks to image-sized masks, exact outlines, COCO RLE and areas.

Coordinates are pixels of the original image: origin top-left, x right, y down, and pixel
(col, row) covers the square [col, col + 1] x [row, row + 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from tools.errors import InvalidInputError

__all__ = ["coco_rle_to_mask", "mask_area", "mask_outline", "mask_to_coco_rle", "paste_mask"]

BoolMask = NDArray[np.bool_]

# Per direction of travel (east, south, west, north, image axes): the offset from an edge's start
# vertex to the centre of the foreground pixel on its right-hand side.
_FG_CENTRE_DX: Final = np.array([0.5, -0.5, -0.5, 0.5])
_FG_CENTRE_DY: Final = np.array([0.5, 0.5, -0.5, -0.5])


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
    polygons = _trace_polygons(m[r0 : int(rows[-1]) + 1, c0 : int(cols[-1]) + 1], x_offset=c0, y_offset=r0)
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


def _runs(a: BoolMask) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Maximal runs of True along each row of a: (row, start, end) with end exclusive."""
    padded = np.zeros((a.shape[0], a.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = a
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # row-major order pairs each end with its start
    return rows, starts, ends


def _trace_polygons(m: BoolMask, *, x_offset: int, y_offset: int) -> list[shapely.Polygon]:
    """The polygons whose union is exactly the set pixels of m, as valid simple-ringed polygons."""
    h, w = m.shape
    p = np.zeros((h + 2, w + 2), dtype=np.bool_)
    p[1:-1, 1:-1] = m

    # Boundary edges, directed so that the set pixel is always on the right-hand side of travel
    # (image axes): east along tops, south along right sides, west along bottoms, north along
    # left sides. Straight runs of edges become one segment each, so segments run corner to corner.
    above, below = p[:-1, 1:-1], p[1:, 1:-1]  # pixels either side of horizontal grid line y
    left, right = p[1:-1, :-1], p[1:-1, 1:]  # pixels either side of vertical grid line x
    y_e, x0_e, x1_e = _runs(below & ~above)
    y_w, x0_w, x1_w = _runs(above & ~below)
    x_s, y0_s, y1_s = _runs((left & ~right).T)
    x_n, y0_n, y1_n = _runs((right & ~left).T)
    sx = np.concatenate((x0_e, x_s, x1_w, x_n))
    sy = np.concatenate((y_e, y0_s, y_w, y1_n))
    ex = np.concatenate((x1_e, x_s, x0_w, x_n))
    ey = np.concatenate((y_e, y1_s, y_w, y0_n))
    # Direction codes 0..3 = east, south, west, north: each is a right turn from the one before.
    direction = np.repeat(np.arange(4), [len(y_e), len(x_s), len(y_w), len(x_n)])

    stride = w + 1
    start_id = sy * stride + sx
    end_id = ey * stride + ex
    by_start = np.argsort(start_id, kind="stable")
    sorted_ids = start_id[by_start]
    lo = np.searchsorted(sorted_ids, end_id, side="left")
    n_out = np.searchsorted(sorted_ids, end_id, side="right") - lo
    first = by_start[lo]
    second = by_start[np.minimum(lo + 1, len(by_start) - 1)]
    # Two segments leave a vertex only where set pixels touch diagonally; there turn right, which
    # keeps each traced ring around one 4-connected group of set pixels.
    right_turn = (direction + 1) % 4
    succ = np.where((n_out == 2) & (direction[first] != right_turn), second, first)
    at_saddle = np.zeros(len(succ), dtype=np.bool_)
    at_saddle[succ[n_out == 2]] = True

    flat_order, loop_lengths = _walk_loops(succ.tolist(), start_id.tolist(), at_saddle.tolist())
    order = np.asarray(flat_order, dtype=np.intp)
    lengths = np.asarray(loop_lengths, dtype=np.intp)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    xs = sx[order].astype(np.int64)
    ys = sy[order].astype(np.int64)
    nxt = np.arange(1, len(order) + 1)
    nxt[offsets + lengths - 1] = offsets
    doubled_area = np.add.reduceat(xs * ys[nxt] - xs[nxt] * ys, offsets)
    loop_ids = np.repeat(np.arange(len(lengths)), lengths)
    coords = np.column_stack((xs + x_offset, ys + y_offset)).astype(np.float64)
    rings = shapely.linearrings(coords, indices=loop_ids)

    # With the set pixels on the right, a ring going clockwise on screen (positive area in these
    # coordinates) encloses set pixels: a shell. The other rings are holes.
    shell_ids = np.flatnonzero(doubled_area > 0)
    hole_ids = np.flatnonzero(doubled_area < 0)
    parent = np.empty(0, dtype=np.intp)
    if hole_ids.size:
        shells = shapely.polygons(rings[shell_ids])
        # A hole belongs to the smallest shell containing a set pixel that borders it.
        first_seg = order[offsets[hole_ids]]
        d = direction[first_seg]
        points = shapely.points(
            sx[first_seg] + _FG_CENTRE_DX[d] + x_offset, sy[first_seg] + _FG_CENTRE_DY[d] + y_offset
        )
        hole_pos, shell_pos = shapely.STRtree(shells).query(points, predicate="within")
        by_hole_then_area = np.lexsort((doubled_area[shell_ids[shell_pos]], hole_pos))
        hole_pos, shell_pos = hole_pos[by_hole_then_area], shell_pos[by_hole_then_area]
        keep = np.concatenate(([True], hole_pos[1:] != hole_pos[:-1]))
        if not np.array_equal(hole_pos[keep], np.arange(hole_ids.size)):
            raise AssertionError("mask_outline: a hole lies in no shell; this is a bug")
        parent = shell_pos[keep]
    # Shell k first, then its holes, all under polygon index k.
    ring_ids = np.concatenate((shell_ids, hole_ids))
    polygon_index = np.concatenate((np.arange(shell_ids.size), parent))
    is_hole = np.concatenate((np.zeros(shell_ids.size, np.bool_), np.ones(hole_ids.size, np.bool_)))
    grouped = np.lexsort((is_hole, polygon_index))
    polygons = shapely.polygons(rings[ring_ids[grouped]], indices=polygon_index[grouped])
    return list(polygons)


def _walk_loops(succ: list[int], start: list[int], at_saddle: list[bool]) -> tuple[list[int], list[int]]:
    """Follow successors into closed loops that never pass the same vertex twice.

    A loop that comes back to a diagonal-touch vertex it already passed is cut there into two
    loops: otherwise a ring would touch itself, which shapely rejects as invalid.
    """
    visited = bytearray(len(succ))
    flat: list[int] = []
    lengths: list[int] = []
    for seed in range(len(succ)):
        if visited[seed]:
            continue
        path: list[int] = []
        seen_at: dict[int, int] = {}  # saddle vertex -> position in path of the segment leaving it
        s = seed
        while not visited[s]:
            visited[s] = 1
            if at_saddle[s]:
                vertex = start[s]
                pos = seen_at.get(vertex)
                if pos is not None:
                    loop = path[pos:]
                    del path[pos:]
                    for t in loop:
                        if at_saddle[t]:
                            seen_at.pop(start[t], None)
                    flat.extend(loop)
                    lengths.append(len(loop))
                seen_at[vertex] = len(path)
            path.append(s)
            s = succ[s]
        flat.extend(path)
        lengths.append(len(path))
    return flat, lengths
