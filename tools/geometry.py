"""PaliGemma's location bins to pixel boxes, and shapely outlines to plain coordinates.

The one place that knows PaliGemma's y-first order and its bin scale (docs/coordinates.md):
`<locNNNN>` tokens come as y_min, x_min, y_max, x_max bins in 0..1023 of the squashed
square image, so they scale straight to the original width and height. big_vision's
training encoder wrote `round(v * 1023)` and its evaluator reads `bin / 1023`; we read
`bin / 1023` too (the exact inverse). Readers that use `/ 1024` differ by < 0.1% of a side.
"""

from __future__ import annotations

import shapely

LOC_BINS = 1024
LOC_SCALE = LOC_BINS - 1  # bin 1023 is the far edge


def bins_to_xyxy(bins_yxyx: tuple[int, int, int, int], *, width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel box (x_min, y_min, x_max, y_max) of the original image from y-first loc bins."""
    y_min, x_min, y_max, x_max = bins_yxyx
    return (
        x_min / LOC_SCALE * width,
        y_min / LOC_SCALE * height,
        x_max / LOC_SCALE * width,
        y_max / LOC_SCALE * height,
    )


def xyxy_to_bins(box_xyxy: tuple[float, float, float, float], *, width: int, height: int) -> tuple[int, int, int, int]:
    """The y-first loc bins the model would write for a pixel box (the training encoder's rounding)."""
    x_min, y_min, x_max, y_max = box_xyxy

    def to_bin(value: float, side: int) -> int:
        return min(LOC_SCALE, max(0, round(value / side * LOC_SCALE)))

    return (to_bin(y_min, height), to_bin(x_min, width), to_bin(y_max, height), to_bin(x_max, width))


Ring = list[tuple[float, float]]


def polygon_rings(geometry: shapely.Geometry) -> list[list[Ring]]:
    """GeoJSON-style MultiPolygon coordinates: polygons -> rings (outer first, then holes) -> (x, y)."""
    polygons = [g for g in shapely.get_parts(geometry) if isinstance(g, shapely.Polygon) and not g.is_empty]
    out: list[list[Ring]] = []
    for polygon in polygons:
        rings = [polygon.exterior, *polygon.interiors]
        out.append([[(float(x), float(y)) for x, y in ring.coords] for ring in rings])
    return out
