"""Exact pixel-edge polygons of a bool mask, traced with whole-array numpy operations.

Pixel (col, row) covers the square [col, col + 1] x [row, row + 1]. The outline is made of
the grid edges between a set and a clear pixel, joined corner to corner into rings:

1. Runs of set pixels along each row (one pass over the mask) give every boundary edge: the
   left and right ends of the runs are the vertical edges, and the horizontal edges along grid
   line y are where exactly one of rows y - 1 and y is covered, found by sweeping the runs'
   ends along that line. Edges are directed with the set pixel on their right (image axes,
   y down), and straight edges are merged, so a ring's vertices sit only at its corners.
2. Each edge's successor is the edge leaving its end. Where set pixels touch only at a corner
   two edges leave the vertex; turning right keeps the pixels apart. A ring that then passes
   the same corner twice would touch itself, so there the other pairing splits it in two.
3. Rings are the cycles of that successor permutation, found by pointer doubling (log of the
   longest ring in rounds), never by walking edge by edge in Python.
4. A ring going one way round (positive area in x, y) is a shell, the other way a hole.

Nothing here needs more than numpy and shapely: contour tracers such as OpenCV's
`findContours`, scikit-image's `find_contours` or contourpy follow pixel centres or iso-lines,
not pixel edges, so their polygons would not have the mask's area or its holes exactly.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import shapely
from numpy.typing import NDArray

__all__ = ["trace_polygons"]

IntArray = NDArray[np.intp]

# Per direction of travel (east, south, west, north, image axes): the offset from an edge's start
# vertex to the centre of the set pixel on its right-hand side.
_SET_CENTRE_DX: Final = np.array([0.5, -0.5, -0.5, 0.5])
_SET_CENTRE_DY: Final = np.array([0.5, 0.5, -0.5, -0.5])


def trace_polygons(mask: NDArray[np.bool_], *, x_offset: int = 0, y_offset: int = 0) -> list[shapely.Polygon]:
    """Valid polygons whose union is exactly the set pixels of a 2-D bool mask, moved by the offsets; [] if none.

    Shells are counter-clockwise and holes clockwise in plain (x, y); pixels that touch only at
    a corner belong to different polygons, or to a hole touching its shell at that corner.
    """
    height, width = mask.shape
    stride = width + 1  # vertex (x, y) has id y * stride + x
    rows, starts, ends = _row_runs(mask)
    if rows.size == 0:
        return []
    x_n, top_n, bottom_n = _merged_columns(starts, rows, height)  # left sides, travelled north
    x_s, top_s, bottom_s = _merged_columns(ends, rows, height)  # right sides, travelled south
    y_h, left_h, right_h, is_east = _horizontal_edges(rows, starts, ends, stride)
    is_west = ~is_east
    # Direction codes 0..3 = east, south, west, north: each is a right turn from the one before.
    sx = np.concatenate((left_h[is_east], x_s, right_h[is_west], x_n))
    sy = np.concatenate((y_h[is_east], top_s, y_h[is_west], bottom_n))
    ex = np.concatenate((right_h[is_east], x_s, left_h[is_west], x_n))
    ey = np.concatenate((y_h[is_east], bottom_s, y_h[is_west], top_n))
    counts = [int(np.count_nonzero(is_east)), x_s.size, int(np.count_nonzero(is_west)), x_n.size]
    direction = np.repeat(np.arange(4), counts)

    start_id = sy * stride + sx
    end_id = ey * stride + ex
    by_start = np.argsort(start_id)
    sorted_ids = np.append(start_id[by_start], -1)
    lo = np.searchsorted(sorted_ids[:-1], end_id)
    succ = by_start[lo]
    # Two edges leave a vertex only where set pixels touch diagonally; the second one sorts next.
    at_corner = np.flatnonzero(sorted_ids[lo + 1] == end_id)
    if at_corner.size:
        other = by_start[lo[at_corner] + 1]
        right_turn = (direction[at_corner] + 1) % 4
        succ[at_corner] = np.where(direction[succ[at_corner]] == right_turn, succ[at_corner], other)
    head = _cycle_heads(succ)
    if at_corner.size:
        # The two edges arriving at each such corner, side by side.
        pairs = at_corner[np.argsort(end_id[at_corner], kind="stable")].reshape(-1, 2)
        touching = pairs[head[pairs[:, 0]] == head[pairs[:, 1]]]
        if touching.size:
            # Both passes in one ring: swapping the two successors splits it there. Splits never
            # join rings, so one round settles every corner.
            succ[touching[:, 0]], succ[touching[:, 1]] = succ[touching[:, 1]], succ[touching[:, 0]]
            head = _cycle_heads(succ)
            if np.any(head[touching[:, 0]] == head[touching[:, 1]]):
                raise AssertionError("trace_polygons: a ring still passes a corner twice; this is a bug")

    # Edges ring by ring, each ring from its lowest-numbered edge on.
    order = np.lexsort((_cycle_positions(succ, head), head))
    ring_start = np.flatnonzero(np.diff(head[order], prepend=-1))
    ring_length = np.diff(ring_start, append=order.size)
    xs, ys = sx[order], sy[order]
    nxt = np.arange(1, order.size + 1)
    nxt[ring_start + ring_length - 1] = ring_start
    doubled_area = np.add.reduceat(xs * ys[nxt] - xs[nxt] * ys, ring_start)
    coords = np.column_stack((xs + x_offset, ys + y_offset)).astype(np.float64)
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(ring_start.size), ring_length))

    # With the set pixels on the right in image axes, a shell has positive area in (x, y).
    shell_ids = np.flatnonzero(doubled_area > 0)
    hole_ids = np.flatnonzero(doubled_area < 0)
    parent = np.zeros(hole_ids.size, dtype=np.intp)
    if hole_ids.size and shell_ids.size > 1:
        # A hole belongs to the smallest shell containing a set pixel that borders it.
        first_edge = order[ring_start[hole_ids]]
        d = direction[first_edge]
        points = shapely.points(
            sx[first_edge] + _SET_CENTRE_DX[d] + x_offset, sy[first_edge] + _SET_CENTRE_DY[d] + y_offset
        )
        hole_pos, shell_pos = shapely.STRtree(shapely.polygons(rings[shell_ids])).query(points, predicate="within")
        by_hole_then_area = np.lexsort((doubled_area[shell_ids[shell_pos]], hole_pos))
        hole_pos, shell_pos = hole_pos[by_hole_then_area], shell_pos[by_hole_then_area]
        first_match = np.concatenate(([True], hole_pos[1:] != hole_pos[:-1]))
        if not np.array_equal(hole_pos[first_match], np.arange(hole_ids.size)):
            raise AssertionError("trace_polygons: a hole lies in no shell; this is a bug")
        parent = shell_pos[first_match]
    # Shell k first, then its holes, all under polygon index k.
    ring_ids = np.concatenate((shell_ids, hole_ids))
    polygon_index = np.concatenate((np.arange(shell_ids.size), parent))
    is_hole = np.concatenate((np.zeros(shell_ids.size, np.bool_), np.ones(hole_ids.size, np.bool_)))
    grouped = np.lexsort((is_hole, polygon_index))
    return list(shapely.polygons(rings[ring_ids[grouped]], indices=polygon_index[grouped]))


def _row_runs(mask: NDArray[np.bool_]) -> tuple[IntArray, IntArray, IntArray]:
    """Maximal runs of set pixels along each row, row-major: (row, start, end), end exclusive."""
    height, width = mask.shape
    stride = width + 1
    # A clear cell before the first row and after every row: along the flat buffer the changes
    # then alternate start, end, and no run reaches into the next row.
    flat = np.zeros(height * stride + 1, np.bool_)
    flat[1:].reshape(height, stride)[:, :width] = mask
    rows, cols = np.divmod(np.flatnonzero(flat[1:] != flat[:-1]), stride)
    return rows[0::2], cols[0::2], cols[1::2]


def _merged_columns(x: IntArray, y: IntArray, height: int) -> tuple[IntArray, IntArray, IntArray]:
    """Unit vertical edges from (x, y) to (x, y + 1) merged into straight segments: (x, y_top, y_bottom)."""
    key = np.sort(x * (height + 1) + y)  # column-major, so one column's edges are consecutive
    first = np.empty(key.size, np.bool_)
    first[0] = True
    first[1:] = key[1:] != key[:-1] + 1
    last = np.append(first[1:], True)
    col, top = np.divmod(key[first], height + 1)
    return col, top, key[last] % (height + 1) + 1


def _horizontal_edges(
    rows: IntArray, starts: IntArray, ends: IntArray, stride: int
) -> tuple[IntArray, IntArray, IntArray, NDArray[np.bool_]]:
    """Straight horizontal edges: (y, x_left, x_right, is_east) for every grid line y.

    Along line y, row y lies below and row y - 1 above. Sweeping the runs' ends in x order
    with +-1 for runs below and +-2 for runs above, a sum of 1 means set below only (the top
    edge of set pixels, travelled east) and 2 set above only (a bottom edge, travelled west).
    """
    n = rows.size
    keys = np.concatenate((rows * stride + starts, rows * stride + ends))
    keys = np.concatenate((keys, keys + stride))
    deltas = np.repeat(np.array([1, -1, 2, -2], np.int8), n)
    by_key = np.argsort(keys, kind="stable")
    keys = keys[by_key]
    state = np.cumsum(deltas[by_key], dtype=np.int8)
    settled = np.append(keys[1:] != keys[:-1], True)  # the state after all changes at one point
    keys, state = keys[settled], state[settled]
    # The state is back to 0 at the end of every line, so an edge always ends on its own line.
    edge = np.flatnonzero((state == 1) | (state == 2))
    y, x_left = np.divmod(keys[edge], stride)
    return y, x_left, keys[edge + 1] % stride, state[edge] == 1


def _cycle_heads(succ: IntArray) -> IntArray:
    """For every element of the permutation succ, the smallest element of its cycle (pointer doubling)."""
    head = np.arange(succ.size)
    jump = succ
    while True:
        # After k rounds head[i] is the least of the 2**k elements from i on; once a round changes
        # nothing, every window holds its whole cycle.
        new = np.minimum(head, head[jump])
        if np.array_equal(new, head):
            return head
        head = new
        jump = jump[jump]


def _cycle_positions(succ: IntArray, head: IntArray) -> IntArray:
    """Steps from each element's cycle head to the element along succ (list ranking by pointer doubling)."""
    index = np.arange(succ.size)
    is_head = head == index
    # Distance to the head going forward; heads are where every path stops.
    to_head = (~is_head).astype(np.intp)
    jump = np.where(is_head, index, succ)
    while True:
        pending = ~is_head[jump]
        if not pending.any():
            break
        to_head = to_head + np.where(pending, to_head[jump], 0)
        jump = np.where(pending, jump[jump], jump)
    length = np.bincount(head, minlength=succ.size)[head]
    result: IntArray = (length - to_head) % length
    return result
