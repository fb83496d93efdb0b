"""Scenes of the synthetic domain with a shape the tiny model never saw, a `star`, written as COCO.

The proof of `paligemma finetune` (docs/finetune.md): the domain of docs/synthetic-domain.md
(light background, solid coloured shapes, no overlaps) with five-pointed stars among the
circles, squares and triangles. `write_coco` draws `count` scenes into a folder of PNGs and one
COCO JSON file with boxes and polygons, the input `paligemma finetune` takes:

    python -m training.star_scenes stars/ --count 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image, ImageDraw

from training import scenes

STAR: Final = "star"
LABELS: Final[tuple[str, ...]] = (STAR, *scenes.SHAPES)  # COCO category ids 1.. in this order
INNER_RADIUS: Final = 0.382  # a regular pentagram's inner/outer radius ratio
CIRCLE_VERTICES: Final = 48
SCENE_MAX_SIDE: Final = 480
STAR_SHARE: Final = 0.5  # of the shapes drawn; every scene holds at least one star


@dataclass(frozen=True)
class Drawn:
    """One drawn object: its label, box (x_min, y_min, x_max, y_max, exclusive max edges) and outline."""

    label: str
    box_xyxy: tuple[int, int, int, int]
    polygon_xy: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class StarScene:
    image: Image.Image
    objects: tuple[Drawn, ...]


def _unit_star() -> list[tuple[float, float]]:
    """A five-pointed star, apex up, stretched to fill the unit square exactly."""
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else INNER_RADIUS
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in points]


def outline(label: str, box: tuple[int, int, int, int]) -> tuple[tuple[float, float], ...]:
    """The polygon (pixel edges) of `label` filling `box`, as drawn."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if label == STAR:
        unit = _unit_star()
    elif label == "circle":
        unit = [
            (
                0.5 + 0.5 * math.cos(2 * math.pi * i / CIRCLE_VERTICES),
                0.5 + 0.5 * math.sin(2 * math.pi * i / CIRCLE_VERTICES),
            )
            for i in range(CIRCLE_VERTICES)
        ]
    elif label == "square":
        unit = [(0, 0), (1, 0), (1, 1), (0, 1)]
    else:  # the upright triangle of training.scenes
        unit = [(0.5, 0), (1, 1), (0, 1)]
    return tuple((x0 + u * w, y0 + v * h) for u, v in unit)


def _draw(draw: ImageDraw.ImageDraw, label: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    if label == STAR:
        x0, y0, x1, y1 = box
        unit = _unit_star()
        draw.polygon([(x0 + u * (x1 - x0 - 1), y0 + v * (y1 - y0 - 1)) for u, v in unit], fill=fill)
    else:
        scenes._draw_shape(draw, label, box, fill)  # type: ignore[arg-type]


def make_star_scene(rng: np.random.Generator, *, max_side: int = SCENE_MAX_SIDE) -> StarScene:
    """A scene of 1-3 non-overlapping shapes, at least one a star, on a plain light background."""
    while True:
        width, height = scenes.random_size(rng, max_side=max_side)
        found = _try(rng, width, height)
        if found is not None:
            return found


def _try(rng: np.random.Generator, width: int, height: int) -> StarScene | None:
    background = tuple(int(v) for v in rng.integers(scenes.BACKGROUND_MIN, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    gap = max(1, round(scenes.GAP_FRACTION * short))
    wanted = int(rng.integers(scenes.MIN_OBJECTS, scenes.MAX_OBJECTS + 1))
    taken: list[tuple[int, int, int, int]] = []
    drawn: list[Drawn] = []
    for _ in range(wanted * 30):
        if len(drawn) == wanted:
            break
        first = not drawn
        label = STAR if first or rng.random() < STAR_SHARE else scenes.SHAPES[int(rng.integers(len(scenes.SHAPES)))]
        side = max(4, round(rng.uniform(*scenes.SIZE_FRACTION) * short))
        tall = side if label in ("circle", "square") else max(4, round(side * rng.uniform(*scenes.TRIANGLE_HEIGHT)))
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - tall + 1))
        box = (x0, y0, x0 + side, y0 + tall)
        if scenes._overlaps(box, taken, gap):
            continue
        color = scenes.COLORS[int(rng.integers(len(scenes.COLORS)))]
        _draw(draw, label, box, scenes._ink(rng, color))
        drawn.append(Drawn(label, box, outline(label, box)))
        taken.append(box)
    if not drawn:
        return None
    sigma = rng.uniform(0, scenes.NOISE_SIGMA_MAX)
    if sigma > 0.5:
        pixels = np.asarray(image, dtype=np.float32)
        pixels += rng.standard_normal(size=pixels.shape, dtype=np.float32) * np.float32(sigma)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return StarScene(image, tuple(drawn))


def coco_document(entries: list[tuple[str, StarScene]]) -> dict[str, Any]:
    """A COCO detection document (boxes and polygons) for scenes saved under the given file names."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (file_name, scene) in enumerate(entries, start=1):
        images.append(
            {"id": image_id, "file_name": file_name, "width": scene.image.width, "height": scene.image.height}
        )
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box_xyxy
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": LABELS.index(obj.label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                "segmentation": [[round(v, 2) for point in obj.polygon_xy for v in point]],
            })  # fmt: skip
    categories = [{"id": i, "name": name} for i, name in enumerate(LABELS, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(folder: Path, count: int, *, seed: int = 0, max_side: int = SCENE_MAX_SIDE) -> Path:
    """Draw `count` scenes into `folder`/images and write `folder`/annotations.json; returns the JSON path."""
    rng = np.random.default_rng(seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        scene = make_star_scene(rng, max_side=max_side)
        name = f"star-{seed}-{i:05d}.png"
        scene.image.save(image_dir / name)
        entries.append((name, scene))
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco_document(entries)))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="writes FOLDER/images/*.png and FOLDER/annotations.json")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_coco(args.folder, args.count, seed=args.seed)
    print(f"{args.count} scenes in {args.folder / 'images'}; COCO annotations in {path}")


if __name__ == "__main__":
    main()
