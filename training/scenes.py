"""The synthetic visual domain the tiny PaliGemma 2 is trained on (specified in docs/synthetic-domain.md).

A scene is a plain light background (mild noise allowed) with 1-3 solid, non-overlapping
shapes (circle, square, upright triangle) in red, green, blue or yellow, each 15-60 % of
the shorter image side wide, and/or one word of 3-8 letters A-Z drawn dark with Pillow's bundled
font across 40-90 % of the width. Images are 64-2000 px a side with aspect 1:2 to 2:1.
Everything is drawn from one `numpy.random.Generator`, so a seed gives the same scene.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Shape = Literal["circle", "square", "triangle"]
Color = Literal["red", "green", "blue", "yellow"]
SceneKind = Literal["shapes", "word", "mixed"]

SHAPES: Final[tuple[Shape, ...]] = ("circle", "square", "triangle")
COLORS: Final[tuple[Color, ...]] = ("red", "green", "blue", "yellow")
# Each colour is any RGB with every channel in its range (pure primaries included).
COLOR_RANGES: Final[dict[Color, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]] = {
    "red": ((170, 255), (0, 80), (0, 80)),
    "green": ((0, 90), (110, 255), (0, 110)),
    "blue": ((0, 90), (0, 130), (160, 255)),
    "yellow": ((200, 255), (180, 255), (0, 90)),
}
BACKGROUND_MIN: Final = 190  # every background channel in 190..255
NOISE_SIGMA_MAX: Final = 6.0  # Gaussian pixel noise, standard deviation 0..6
TEXT_MAX_CHANNEL: Final = 80  # text colour: every channel in 0..80
MIN_SIDE_PX: Final = 64
MAX_SIDE_PX: Final = 2000
MIN_OBJECTS: Final = 1
MAX_OBJECTS: Final = 3
SIZE_FRACTION: Final = (0.15, 0.60)  # shape width / shorter image side
TRIANGLE_HEIGHT: Final = (0.8, 1.0)  # triangle height / its width (1.0: fills a square box; ~0.87: equilateral)
WORD_LETTERS: Final = (3, 8)
WORD_WIDTH_FRACTION: Final = (0.40, 0.90)  # word width / image width
GAP_FRACTION: Final = 0.02  # least gap between objects, of the shorter side


@dataclass(frozen=True)
class WordList:
    """Words a scene's word is drawn from in `share` of the scenes that hold one (the rest:
    random letters); each is 3-8 letters A-Z, so the scenes stay in the domain."""

    words: tuple[str, ...]
    share: float = 1.0


@dataclass(frozen=True)
class ShapeObject:
    """One drawn shape with its box in pixels (x_min, y_min, x_max, y_max, exclusive max edges)."""

    shape: Shape
    color: Color
    box_xyxy: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Word:
    text: str
    box_xyxy: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    objects: tuple[ShapeObject, ...]
    word: Word | None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def shape_mask(shape: Shape, width: int, height: int) -> np.ndarray:
    """The bool mask of `shape` filling a `width` x `height` box, as drawn in scenes."""
    canvas = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, width, height), 255)
    return np.asarray(canvas) > 127


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: Shape, box: tuple[int, int, int, int], fill: int | tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box  # exclusive max edges
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:  # upright isosceles triangle: apex at the top centre, base along the bottom edge
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def random_size(rng: np.random.Generator, *, max_side: int = MAX_SIDE_PX) -> tuple[int, int]:
    """A (width, height) in MIN_SIDE_PX..max_side with aspect 1:2 to 2:1, log-uniform in scale."""
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
    long_side = int(np.exp(rng.uniform(np.log(MIN_SIDE_PX * 2), np.log(max_side))))
    if aspect >= 1:
        width, height = long_side, round(long_side / aspect)
    else:
        width, height = round(long_side * aspect), long_side
    return max(MIN_SIDE_PX, width), max(MIN_SIDE_PX, height)


def _ink(rng: np.random.Generator, color: Color) -> tuple[int, int, int]:
    r, g, b = (int(rng.integers(lo, hi + 1)) for lo, hi in COLOR_RANGES[color])
    return r, g, b


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in others)


@functools.lru_cache(maxsize=256)
def bundled_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (loaded once per size: loading dominates drawing a word)."""
    return ImageFont.load_default(size=size)


def _word_text(rng: np.random.Generator, word_list: WordList | None) -> str:
    if word_list is not None and rng.random() < word_list.share:
        return word_list.words[int(rng.integers(len(word_list.words)))]
    letters = int(rng.integers(WORD_LETTERS[0], WORD_LETTERS[1] + 1))
    return "".join(chr(ord("A") + int(i)) for i in rng.integers(0, 26, size=letters))


def _place_word(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, width: int, height: int, word_list: WordList | None
) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont, tuple[int, int, int, int]] | None:
    text = _word_text(rng, word_list)
    target = rng.uniform(*WORD_WIDTH_FRACTION) * width
    probe = bundled_font(100)
    probe_width = draw.textlength(text, font=probe)
    size = max(4, int(100 * target / probe_width))
    font = bundled_font(size)
    left, top, right, bottom = (int(v) for v in draw.textbbox((0, 0), text, font=font))
    text_w, text_h = right - left, bottom - top
    if text_w > width * WORD_WIDTH_FRACTION[1] or text_w < width * WORD_WIDTH_FRACTION[0] or text_h >= height - 2:
        return None
    x = int(rng.integers(0, width - text_w + 1)) - left
    y = int(rng.integers(0, height - text_h + 1)) - top
    return text, font, (x + left, y + top, x + right, y + bottom)


def make_scene(
    rng: np.random.Generator,
    *,
    kind: SceneKind | None = None,
    size: tuple[int, int] | None = None,
    max_side: int = MAX_SIDE_PX,
    most_objects: int = MAX_OBJECTS,
    word_list: WordList | None = None,
) -> Scene:
    """A random scene of the domain; `kind` and `size` (width, height) fix those choices,
    `most_objects` narrows the number of shapes (1..MAX_OBJECTS), and `word_list` draws some of
    the words from a list instead of random letters."""
    kind = kind or ("shapes", "word", "mixed")[int(rng.choice(3, p=[0.55, 0.2, 0.25]))]
    while True:
        width, height = size or random_size(rng, max_side=max_side)
        scene = _try_scene(rng, kind, width, height, most_objects, word_list)
        if scene is not None:
            return scene


def _try_scene(
    rng: np.random.Generator, kind: SceneKind, width: int, height: int, most_objects: int, word_list: WordList | None
) -> Scene | None:
    background = tuple(int(v) for v in rng.integers(BACKGROUND_MIN, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    gap = max(1, round(GAP_FRACTION * short))
    taken: list[tuple[int, int, int, int]] = []
    word: Word | None = None
    if kind in ("word", "mixed"):
        placed = _place_word(rng, draw, width, height, word_list)
        if placed is None:
            return None
        text, font, box = placed
        ink = tuple(int(v) for v in rng.integers(0, TEXT_MAX_CHANNEL + 1, size=3))
        draw.text((box[0], box[1]), text, font=font, fill=ink, anchor="lt")
        word = Word(text, box)
        taken.append(box)
    objects: list[ShapeObject] = []
    if kind in ("shapes", "mixed"):
        wanted = int(rng.integers(MIN_OBJECTS, min(most_objects, MAX_OBJECTS) + 1))
        for _ in range(wanted * 30):
            if len(objects) == wanted:
                break
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = COLORS[int(rng.integers(len(COLORS)))]
            side = max(2, round(rng.uniform(*SIZE_FRACTION) * short))
            tall = max(2, round(side * rng.uniform(*TRIANGLE_HEIGHT))) if shape == "triangle" else side
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - tall + 1))
            box = (x0, y0, x0 + side, y0 + tall)
            if _overlaps(box, taken, gap):
                continue
            _draw_shape(draw, shape, box, _ink(rng, color))
            objects.append(ShapeObject(shape, color, box))
            taken.append(box)
        if not objects:
            return None
    sigma = rng.uniform(0, NOISE_SIGMA_MAX)
    if sigma > 0.5:
        pixels = np.asarray(image, dtype=np.float32)
        pixels += rng.standard_normal(size=pixels.shape, dtype=np.float32) * np.float32(sigma)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return Scene(image=image, objects=tuple(objects), word=word)


def object_mask(scene: Scene, obj: ShapeObject) -> np.ndarray:
    """The (height, width) bool mask of one object in the scene's pixels."""
    x0, y0, x1, y1 = obj.box_xyxy
    full = np.zeros((scene.height, scene.width), dtype=bool)
    full[y0:y1, x0:x1] = shape_mask(obj.shape, x1 - x0, y1 - y0)
    return full
