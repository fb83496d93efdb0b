"""Per-patch targets of the auxiliary loss that teaches the tiny model's vision tower to see.

Each image token of the tiny model covers one cell of a grid x grid split of the (squashed)
image. Its targets: what covers the cell (background, a shape, the word), the shape's colour,
the box of that shape in `<loc>` bins, and the letter of the word under the cell's centre. The
targets come from the scene's own geometry; the heads that read them are discarded after
training (docs/tiny-model.md, "Why an auxiliary loss").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from tools import geometry
from training.scenes import COLORS, SHAPES, Scene, bundled_font, object_mask

KINDS: Final = ("background", *SHAPES, "word")
IGNORE: Final = -100
COVERED: Final = 0.35  # least share of a cell an object must cover to name the cell


@dataclass(frozen=True)
class PatchTargets:
    """Arrays over the grid x grid cells, row-major; IGNORE where a target does not apply."""

    kind: np.ndarray  # (cells,) index into KINDS
    color: np.ndarray  # (cells,) 0 for no colour, 1.. into COLORS
    box_bins: np.ndarray  # (cells, 4) y_min, x_min, y_max, x_max bins of the covering shape
    letter: np.ndarray  # (cells,) 0..25 for A..Z


def coverage(mask: np.ndarray, grid: int) -> np.ndarray:
    """Share of each grid cell that `mask` covers, (grid, grid)."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((grid, grid), Image.Resampling.BOX), dtype=np.float32).reshape(-1) / 255.0


def letter_edges(text: str, left: int, right: int) -> np.ndarray:
    """x of each letter's right edge across the word's box, in proportion to the font's advances."""
    font = bundled_font(100)
    advances = np.array([font.getlength(text[: i + 1]) for i in range(len(text))], dtype=np.float64)
    edges: np.ndarray = left + (right - left) * advances / advances[-1]
    return edges


def patch_targets(scene: Scene, grid: int) -> PatchTargets:
    cells = grid * grid
    kind = np.zeros(cells, dtype=np.int64)
    color = np.zeros(cells, dtype=np.int64)
    box_bins = np.full((cells, 4), IGNORE, dtype=np.int64)
    letter = np.full(cells, IGNORE, dtype=np.int64)
    best = np.full(cells, COVERED, dtype=np.float32)
    for obj in scene.objects:
        share = coverage(object_mask(scene, obj), grid)
        won = share >= best
        best = np.where(won, share, best)
        kind[won] = 1 + SHAPES.index(obj.shape)
        color[won] = 1 + COLORS.index(obj.color)
        box_bins[won] = geometry.xyxy_to_bins(obj.box_xyxy, width=scene.width, height=scene.height)
    if scene.word is not None:
        x0, y0, x1, y1 = scene.word.box_xyxy
        mask = np.zeros((scene.height, scene.width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        won = coverage(mask, grid) >= best
        kind[won] = KINDS.index("word")
        centres_x = (np.arange(cells) % grid + 0.5) * scene.width / grid
        index = np.searchsorted(letter_edges(scene.word.text, x0, x1), centres_x)
        index = np.clip(index, 0, len(scene.word.text) - 1)
        letters = np.array([ord(scene.word.text[i]) - ord("A") for i in index], dtype=np.int64)
        letter[won] = letters[won]
    return PatchTargets(kind=kind, color=color, box_bins=box_bins, letter=letter)
