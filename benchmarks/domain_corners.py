"""The trained tiny model at the corners of its domain, on images drawn by a second drawer.

    .venv/bin/python -m benchmarks.domain_corners [--per-corner 20] [--model DIR] [--base-url URL]

`benchmarks.tiny_accuracy` scores held-out scenes of `training.scenes`, the generator the model
was trained on. This script draws its own images from the written specification alone
(docs/synthetic-domain.md), with drawing code that shares nothing with the training's (the
scores are `training.evaluate`'s): a plain light background, solid shapes in colours drawn from
the documented ranges, a word in Pillow's bundled font centred across 45-85 % of the width, at
the sizes and aspects where the domain ends (64 px, 1:2 and 2:1, 2000 px; a 4000x3000 photo that
the tools downscale; a JPEG stored sideways with EXIF orientation 6). What a user who draws their
own test images gets, through the typed tools against `paligemma serve --model tiny` (started
here unless `--base-url` names a running one; `--model` measures a `train-tiny` output folder).
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import tools
from benchmarks.common import print_table, use_own_vae
from server.model_source import TINY_NAME
from tools.tiny_shapes_model import TINY_SHAPES_MODEL
from training.evaluate import box_iou, mask_iou

SHAPES = ("circle", "square", "triangle")
COLOR_RANGES = {  # docs/synthetic-domain.md: (low, high) per channel
    "red": ((170, 255), (0, 80), (0, 80)),
    "green": ((0, 90), (110, 255), (0, 110)),
    "blue": ((0, 90), (0, 130), (160, 255)),
    "yellow": ((200, 255), (180, 255), (0, 90)),
}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IOU_MIN = 0.7
SHAPE_SIZES = ((64, 64), (64, 128), (120, 200), (640, 480), (2000, 1000), (1000, 2000), (4000, 3000))
WORD_SIZES = ((128, 64), (300, 300), (640, 360), (200, 400), (1000, 500), (1500, 1500))


@dataclass(frozen=True)
class Drawn:
    """One solid shape as drawn: its name, colour name and box (x0, y0, x1, y1) in pixels."""

    shape: str
    color: str
    box_xyxy: tuple[int, int, int, int]


def light_background(rng: random.Random, width: int, height: int) -> Image.Image:
    fill = np.array([rng.randint(200, 255) for _ in range(3)], dtype=np.float32)
    pixels = np.broadcast_to(fill, (height, width, 3)).copy()
    sigma = rng.choice((0.0, 4.0))
    if sigma:
        pixels += np.random.default_rng(rng.randrange(1 << 30)).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, fill: tuple[int, ...] | int, box: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)


def shape_mask(width: int, height: int, drawn: Drawn) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(image), drawn.shape, 255, drawn.box_xyxy)
    return np.asarray(image) > 127


def apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def shapes_scene(rng: random.Random, width: int, height: int) -> tuple[Image.Image, list[Drawn]]:
    """1-3 solid shapes, each 15-60 % of the shorter side (smaller when there are several), apart."""
    count = rng.randint(1, 3)
    short = min(width, height)
    gap = max(1, short // 25)
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < count:
        side = int(short * rng.uniform(0.15, 0.6 if count == 1 else 0.35))
        x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
        box = (x0, y0, x0 + side, y0 + side)
        if all(apart(box, other, gap) for other in boxes):
            boxes.append(box)
    image = light_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    drawn = []
    for box in boxes:
        shape, color = rng.choice(SHAPES), rng.choice(list(COLOR_RANGES))
        fill = tuple(rng.randint(low, high) for low, high in COLOR_RANGES[color])
        draw_shape(draw, shape, fill, box)
        drawn.append(Drawn(shape, color, box))
    return image, drawn


def word_scene(rng: random.Random, width: int, height: int) -> tuple[Image.Image, str]:
    """One word of 3-8 letters, dark, centred across 45-85 % of the width, at a random height."""
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 8)))
    image = light_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    target = rng.uniform(0.45, 0.85) * width
    size = 4
    while draw.textlength(word, font=ImageFont.load_default(size=size + 1)) <= target:
        size += 1
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    x = (width - (right - left)) / 2 - left
    y = rng.uniform(0.05, 0.95) * (height - (bottom - top)) - top
    draw.text((x, y), word, fill=tuple(rng.randint(0, 60) for _ in range(3)), font=font)
    return image, word


def sideways_jpeg(upright: Image.Image) -> bytes:
    """A JPEG whose stored pixels are turned a quarter left, EXIF orientation 6 turning them back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=92, exif=exif)
    return buffer.getvalue()


class Tally:
    """Hits per (corner, measure)."""

    def __init__(self) -> None:
        self.hits: dict[tuple[str, str], list[bool]] = {}

    def add(self, corner: str, measure: str, hit: bool) -> None:
        self.hits.setdefault((corner, measure), []).append(hit)

    def cell(self, corner: str, measure: str) -> str:
        hits = self.hits.get((corner, measure))
        return f"{sum(hits)}/{len(hits)} ({np.mean(hits):.2f})" if hits else "-"


def ask_about_shapes(
    client: tools.PaliGemmaClient,
    tally: Tally,
    corner: str,
    image: tools.ImageSource,
    drawn: list[Drawn],
    size: tuple[int, int],
) -> None:
    """Where the shapes are, how many, the first one's colour (when its shape is alone) and mask."""
    found = tools.locate_objects(image, list(SHAPES), client=client)
    for truth in drawn:
        best = max((box_iou(o.box.xyxy, truth.box_xyxy) for o in found.objects if o.label == truth.shape), default=0.0)
        tally.add(corner, "shapes found", best >= IOU_MIN)
    count = tools.answer_visual_question(image, "how many shapes are there?", client=client)
    tally.add(corner, "count", count.answer == str(len(drawn)))
    first = drawn[0]
    if sum(d.shape == first.shape for d in drawn) == 1:
        color = tools.answer_visual_question(image, f"what color is the {first.shape}?", client=client)
        tally.add(corner, "colour", color.answer == first.color)
    segments = tools.segment_objects(image, first.shape, client=client)
    truth_mask = shape_mask(*size, first)
    ious = [mask_iou(o.mask, truth_mask) for o in segments.objects if o.mask is not None]
    tally.add(corner, "mask", max(ious, default=0.0) >= IOU_MIN)


def run(client: tools.PaliGemmaClient, per_corner: int, seed: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    for width, height in SHAPE_SIZES:
        corner = f"shapes {width}x{height}"
        for _ in range(per_corner):
            image, drawn = shapes_scene(rng, width, height)
            ask_about_shapes(client, tally, corner, image, drawn, (width, height))
    for _ in range(per_corner):
        image, drawn = shapes_scene(rng, 900, 1600)
        ask_about_shapes(
            client, tally, "shapes 900x1600, stored sideways (EXIF 6)", sideways_jpeg(image), drawn, (900, 1600)
        )
    for width, height in WORD_SIZES:
        for _ in range(per_corner):
            image, word = word_scene(rng, width, height)
            tally.add(f"word {width}x{height}", "word read whole", tools.read_text(image, client=client).text == word)
    return tally


@contextmanager
def endpoint(base_url: str | None, model: str) -> Iterator[tuple[str, str]]:
    """(base URL, model name): the tiny model at `base_url`, or `paligemma serve --model MODEL`
    started and stopped here. Either serves under the tiny model's name, so that the tools send
    what they send the shipped one (its 288 px input; tools.tiny_shapes_model)."""
    if base_url:
        yield base_url, TINY_SHAPES_MODEL
        return
    from server import serve
    from server.process import free_port
    from server.vllm_command import ServeOptions

    options = ServeOptions(model=model, port=free_port(), eager=True, served_model_name=TINY_SHAPES_MODEL)
    plan = serve.plan(options, device="cpu")
    with serve.running(plan, echo=False):
        yield plan.command.base_url, plan.command.served_model_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-corner", type=int, default=20, help="images per size")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--model", default=TINY_NAME, help="tiny (the shipped trained model) or a checkpoint folder")
    parser.add_argument(
        "--base-url", help=f"a running server of the tiny model, served as {TINY_SHAPES_MODEL} (else one is started)"
    )
    args = parser.parse_args()
    use_own_vae(args.model)
    with (
        endpoint(args.base_url, args.model) as (base_url, model),
        tools.PaliGemmaClient(base_url=base_url, model=model) as client,
    ):
        tally = run(client, args.per_corner, args.seed)
    measures = ("shapes found", "mask", "count", "colour", "word read whole")
    corners = list(dict.fromkeys(corner for corner, _ in tally.hits))
    rows = [[corner, *(tally.cell(corner, m) for m in measures)] for corner in corners]
    print_table(
        f"Tiny trained PaliGemma 2 on images of a second drawer, {args.per_corner} per size (seed {args.seed}); "
        f"found and masks at IoU >= {IOU_MIN}",
        ["image", *measures],
        rows,
    )


if __name__ == "__main__":
    main()
