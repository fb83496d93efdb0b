"""The vectorised pixel-edge tracer: exact rings, corners only, and agreement with a slow reference."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tools.pixel_outline import trace_polygons

Ring = list[tuple[float, float]]


def from_rows(*rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def union_of_runs(mask: np.ndarray) -> shapely.Geometry:
    """The slow, obviously right region: the union of one rectangle per horizontal run of set pixels."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return shapely.union_all(shapely.box(starts, rows, ends, rows + 1))


def canonical(ring: shapely.LinearRing) -> Ring:
    """A ring's vertices without the closing repeat, rotated to start at the smallest (x, y)."""
    points = [(float(x), float(y)) for x, y in ring.coords[:-1]]
    first = points.index(min(points))
    return points[first:] + points[:first]


def assert_exact(mask: np.ndarray, polygons: list[shapely.Polygon]) -> None:
    """Valid, the mask's area and pixels exactly, shells CCW and holes CW, vertices at corners only."""
    if not mask.any():
        assert polygons == []
        return
    geometry = shapely.MultiPolygon(polygons)
    assert geometry.is_valid, shapely.is_valid_reason(geometry)
    assert geometry.area == mask.sum()
    assert geometry.equals(union_of_runs(mask))
    for polygon in polygons:
        assert polygon.is_valid and polygon.exterior.is_ccw and not any(r.is_ccw for r in polygon.interiors)
        for ring in (polygon.exterior, *polygon.interiors):
            xy = np.asarray(ring.coords)[:-1]
            step = np.roll(xy, -1, axis=0) - xy
            assert np.all((step[:, 0] == 0) != (step[:, 1] == 0)), "every edge is axis-parallel and non-empty"
            turn = step[:, 0] * np.roll(step, -1, axis=0)[:, 1] - step[:, 1] * np.roll(step, -1, axis=0)[:, 0]
            assert np.all(turn != 0), "a vertex in the middle of a straight edge"
            assert len(set(map(tuple, xy))) == len(xy), "a ring passes a vertex twice"


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        # Each polygon as [shell, holes...], each ring from its smallest (x, y): a shell (counter-clockwise
        # in x, y) goes along x first, a hole (clockwise) along y first.
        pytest.param(from_rows("."), [], id="empty"),
        pytest.param(from_rows("...", "...", "..."), [], id="empty-3x3"),
        pytest.param(from_rows("#"), [[[(0, 0), (1, 0), (1, 1), (0, 1)]]], id="single-pixel"),
        pytest.param(from_rows("...", ".#.", "..."), [[[(1, 1), (2, 1), (2, 2), (1, 2)]]], id="single-pixel-inside"),
        pytest.param(from_rows("###", "###"), [[[(0, 0), (3, 0), (3, 2), (0, 2)]]], id="full"),
        pytest.param(
            from_rows("###", "#.#", "###"),
            [[[(0, 0), (3, 0), (3, 3), (0, 3)], [(1, 1), (1, 2), (2, 2), (2, 1)]]],
            id="hole",
        ),
        pytest.param(
            from_rows("#.", ".#"),
            [[[(0, 0), (1, 0), (1, 1), (0, 1)]], [[(1, 1), (2, 1), (2, 2), (1, 2)]]],
            id="diagonal-pixels",
        ),
        pytest.param(
            from_rows(".#", "#."),
            [[[(0, 1), (1, 1), (1, 2), (0, 2)]], [[(1, 0), (2, 0), (2, 1), (1, 1)]]],
            id="anti-diagonal-pixels",
        ),
        pytest.param(
            # The hole touches the outside at the corner (2, 2): one shell, one hole sharing that point.
            from_rows("###", "#.#", "##."),
            [[[(0, 0), (3, 0), (3, 2), (2, 2), (2, 3), (0, 3)], [(1, 1), (1, 2), (2, 2), (2, 1)]]],
            id="hole-touching-outside-at-corner",
        ),
        pytest.param(
            from_rows("##.", "#..", "..."),
            [[[(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]]],
            id="l-shape",
        ),
    ],
)
def test_trace_polygons_table(mask: np.ndarray, expected: list[list[Ring]]) -> None:
    polygons = trace_polygons(mask)
    assert_exact(mask, polygons)
    got = sorted([canonical(p.exterior), *sorted(canonical(r) for r in p.interiors)] for p in polygons)
    assert got == sorted([[[(float(x), float(y)) for x, y in ring] for ring in rings] for rings in expected])


@pytest.mark.parametrize(
    ("mask", "parts", "holes"),
    [
        pytest.param(from_rows("####", "#.##", "##.#", "####"), 1, 2, id="holes-touching-each-other"),
        pytest.param(from_rows(".#.", "#.#", ".#."), 4, 0, id="diamond-of-diagonals"),
        pytest.param(
            from_rows("#######", "#.....#", "#.#.#.#", "#..#..#", "#.#.#.#", "#.....#", "#######"),
            6,
            1,
            id="diagonal-islands-in-a-hole",
        ),
        pytest.param(np.indices((40, 40)).sum(axis=0) % 2 == 0, 800, 0, id="checkerboard"),
        pytest.param(np.ones((1, 500), bool), 1, 0, id="one-long-row"),
        pytest.param(np.ones((500, 1), bool), 1, 0, id="one-long-column"),
    ],
)
def test_trace_polygons_counts(mask: np.ndarray, parts: int, holes: int) -> None:
    polygons = trace_polygons(mask)
    assert_exact(mask, polygons)
    assert len(polygons) == parts
    assert sum(len(p.interiors) for p in polygons) == holes


def test_offsets_shift_every_vertex() -> None:
    mask = from_rows("##", "#.")
    shifted = trace_polygons(mask, x_offset=300, y_offset=100)
    assert shapely.MultiPolygon(shifted).equals(
        shapely.affinity.translate(shapely.MultiPolygon(trace_polygons(mask)), 300, 100)
    )


def test_one_long_ring() -> None:
    # A staircase: one ring of 2002 corners (two per row, and (0, 0) and (0, 1000)), which takes the
    # pointer doubling a dozen rounds.
    ys, xs = np.mgrid[:1000, :1000]
    mask = xs + ys < 1000
    polygons = trace_polygons(mask)
    assert_exact(mask, polygons)
    assert len(polygons) == 1 and len(polygons[0].exterior.coords) == 2002 + 1  # closed: first point again


def test_large_smooth_mask_with_holes_and_parts() -> None:
    ys, xs = np.mgrid[:900, :1200]
    r2 = (xs - 500) ** 2 + (ys - 450) ** 2
    mask = (r2 < 400**2) & (r2 > 100**2) | ((xs - 1100) ** 2 + (ys - 100) ** 2 < 60**2)
    mask[440:460, 300:320] = False  # a second hole, in the ring
    polygons = trace_polygons(mask)
    assert_exact(mask, polygons)
    assert len(polygons) == 2 and sorted(len(p.interiors) for p in polygons) == [0, 2]


@settings(max_examples=400, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 16), st.integers(1, 16))))
def test_trace_polygons_property(mask: np.ndarray) -> None:
    assert_exact(mask, trace_polygons(mask))
