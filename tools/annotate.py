"""Draw boxes, masks and labels on the image, one distinct colour per label, with a legend.

For people (the chat app, the batch command) and for LLMs that take images back. The
legend is a band added below the image, so nothing in the image is covered by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tools.models import LocatedObject, LocatedObjects, Segment

# Distinct, colour-blind-friendly hues (Okabe-Ito and Tableau), bright enough on photos.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 87, 87),
    (148, 103, 189),
    (140, 86, 75),
    (127, 127, 127),
    (23, 190, 207),
)
MASK_ALPHA = 0.45
# Drawing costs per object and the legend grows per label: a hostile answer may hold thousands.
MAX_DRAWN_OBJECTS = 100
MAX_LEGEND_LABELS = 20


def label_colours(labels: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """One palette colour per distinct label, in order of first appearance."""
    colours: dict[str, tuple[int, int, int]] = {}
    for label in labels:
        if label not in colours:
            colours[label] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _overlay_masks(
    base: Image.Image, objects: Sequence[LocatedObject], scale: float, colours: dict[str, tuple[int, int, int]]
) -> Image.Image:
    pixels = np.asarray(base, dtype=np.float32).copy()
    for obj in objects:
        if not isinstance(obj, Segment) or obj.mask is None:
            continue
        mask = obj.mask
        if scale != 1.0:
            resized = Image.fromarray(mask).resize(base.size, Image.Resampling.NEAREST)
            mask = np.asarray(resized, dtype=bool)
        colour = np.array(colours[obj.label], dtype=np.float32)
        pixels[mask] = pixels[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
    return Image.fromarray(pixels.round().astype(np.uint8))


def annotate(
    image: Image.Image, result: LocatedObjects, *, max_side: int | None = None, min_side: int | None = None
) -> Image.Image:
    """A copy of `image` (the original, upright) with the result drawn; at most `max_side` px per
    side, and enlarged until its longer side is `min_side` (labels and legend stay readable on a
    64 px image)."""
    if image.size != (result.image_width, result.image_height):
        raise ValueError(
            f"the image is {image.width}x{image.height} but the result is for "
            f"{result.image_width}x{result.image_height}: annotate the image the tool was given"
        )
    longest = max(image.size)
    drawn_side = max(longest, min_side or 0)
    drawn_side = drawn_side if max_side is None else min(drawn_side, max_side)
    scale = drawn_side / longest
    base = image if image.mode == "RGB" else image.convert("RGB")
    if scale != 1.0:  # resized before anything else, so no full-size copy is made
        resample = Image.Resampling.BICUBIC if scale < 1.0 else Image.Resampling.NEAREST  # enlarged: pixels stay sharp
        base = base.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    else:
        base = base.copy()
    drawn = result.objects[:MAX_DRAWN_OBJECTS]
    colours = label_colours([o.label for o in drawn])
    if result.holds_masks():
        base = _overlay_masks(base, drawn, scale, colours)
    line = max(2, round(min(base.size) / 200))
    font = _font(max(12, round(min(base.size) / 28)))
    draw = ImageDraw.Draw(base)
    for obj in drawn:
        # The pixels the box edges fall in (pixel i covers [i, i+1]); the outline is drawn inward.
        x0, y0 = (math.floor(v * scale) for v in obj.box.xyxy[:2])
        x1, y1 = (max(a + 1, math.ceil(v * scale)) - 1 for a, v in zip((x0, y0), obj.box.xyxy[2:], strict=True))
        colour = colours[obj.label]
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        _tag(draw, obj.label[:80], (x0, y0), colour, font, base.size)
    return _with_legend(base, colours, font, not_drawn=len(result.objects) - len(drawn))


def _tag(
    draw: ImageDraw.ImageDraw,
    text: str,
    at: tuple[float, float],
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0.0, at[0]), max(0, size[0] - w))
    y = at[1] - h if at[1] - h >= 0 else at[1]  # above the box, or inside it at the top edge
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0), font=font)


def _with_legend(
    image: Image.Image,
    colours: dict[str, tuple[int, int, int]],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    *,
    not_drawn: int = 0,
) -> Image.Image:
    if not colours:
        return image
    probe = ImageDraw.Draw(image)
    row = round(probe.textbbox((0, 0), "Ag", font=font)[3]) + 8
    shown = list(colours.items())[:MAX_LEGEND_LABELS]
    notes = []
    if len(colours) > len(shown):
        notes.append(f"+{len(colours) - len(shown)} more labels")
    if not_drawn:
        notes.append(f"+{not_drawn} objects not drawn")
    band = Image.new("RGB", (image.width, row * (len(shown) + len(notes)) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for i, (label, colour) in enumerate(shown):
        y = 4 + i * row
        draw.rectangle((8, y + 2, 8 + row - 8, y + row - 6), fill=colour)
        draw.text((8 + row, y), label[:80], fill=(0, 0, 0), font=font)
    for j, note in enumerate(notes):
        draw.text((8, 4 + (len(shown) + j) * row), note, fill=(0, 0, 0), font=font)
    out = Image.new("RGB", (image.width, image.height + band.height), (255, 255, 255))
    out.paste(image, (0, 0))
    out.paste(band, (0, image.height))
    return out
