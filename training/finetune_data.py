"""Fine-tuning examples from a user's data: COCO JSON or JSON Lines of `{"image", "prefix", "suffix"}`.

Every example is an image, a prompt (the prefix, as the tools send it) and the answer the model
should give (the suffix). From COCO, targets are written by the tools' own format code
(`tools.prompts`, `tools.answer_text`, `tools.geometry`), the inverse of the parsers the tools
read answers with: one `detect NAME` (or `segment NAME`) example per image and category present,
its objects left to right; images without annotations give one example per category with an
empty answer, so the model learns to say nothing. JSON Lines are taken as written, checked to
be prompts of the task and (for detect/segment) answers the tools' parsers read without issues.
Every mistake in the data is a DatasetError naming the file, the line or id, and what to fix.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from PIL import Image

from tools import answer_text, geometry, parsing, prompts
from tools.errors import ImageError, InvalidInputError, PromptError
from tools.images import load_image
from tools.vae_decoder import MASK_SIZE

Task = Literal["detect", "segment", "ocr", "caption", "answer"]
TASKS: Final[tuple[Task, ...]] = ("detect", "segment", "ocr", "caption", "answer")
# The first word of a prompt each task accepts (caption covers the long form, `describe`).
PROMPT_WORDS: Final[dict[Task, tuple[str, ...]]] = {
    "detect": ("detect",),
    "segment": ("segment",),
    "ocr": ("ocr",),
    "caption": ("caption", "describe"),
    "answer": ("answer",),
}
MaskEncoder = Callable[[np.ndarray], np.ndarray]  # (N, 64, 64) masks in [-1, 1] -> (N, 16) codes


JSON_LINES_SUFFIXES: Final = (".jsonl", ".ndjson")


class FinetuneError(InvalidInputError):
    """A fine-tuning run cannot start or go on as asked; the message says what to change."""


class DatasetError(FinetuneError):
    """The fine-tuning data cannot be used as given: the message names the file, the place and the fix."""


@dataclass(frozen=True)
class Instance:
    """One annotated object: its label, pixel box (x_min, y_min, x_max, y_max) and mask when given,
    kept run-length encoded: a full-size mask per object of a whole dataset would not fit in memory
    (20 photos of 4000 x 3000 with five masks each held 1.2 GB)."""

    label: str
    box_xyxy: tuple[float, float, float, float]
    rle: dict[str, Any] | None = field(default=None, compare=False)  # COCO run-length encoding, for segment

    @classmethod
    def with_mask(cls, label: str, box_xyxy: tuple[float, float, float, float], mask: np.ndarray | None) -> Instance:
        from pycocotools import mask as coco_masks

        rle = None if mask is None else coco_masks.encode(np.asfortranarray(mask, dtype=np.uint8))
        return cls(label, box_xyxy, rle)

    @property
    def mask(self) -> np.ndarray | None:
        """The (height, width) bool mask, decoded on each call."""
        return None if self.rle is None else decode_rle(self.rle)


@dataclass(frozen=True)
class Record:
    """One training example: image file, its size, prompt (prefix), answer (suffix), and the truth."""

    image: Path
    width: int
    height: int
    prefix: str
    suffix: str
    instances: tuple[Instance, ...] = ()  # what detect/segment answers are scored against


def load_upright(path: Path, where: str) -> Image.Image:
    """The image as the tools send it (EXIF orientation applied, transparency on white, 16-bit
    scaled, 8-bit RGB), decoded whole; DatasetError naming the file if it is missing or damaged."""
    if not path.is_file():
        raise DatasetError(f"{where}: image file {path} does not exist. Check --images (the folder the names are in).")
    try:
        return load_image(path).image
    except ImageError as e:
        raise DatasetError(f"{where}: {e}") from e


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) as a viewer sees the image, which the boxes must be in; the whole file is
    decoded once here, so a damaged image is named before training starts, not midway."""
    return load_upright(path, where).size


def load_records(
    data: Path, images: Path, task: Task, *, encoder: MaskEncoder | None = None, lang: str = "en"
) -> list[Record]:
    """The examples of a COCO JSON file (`.json`) or a JSON Lines file (`.jsonl`), images under `images`."""
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; use one of {', '.join(TASKS)}.")
    if not data.is_file():
        raise DatasetError(f"the data file {data} does not exist.")
    if not images.is_dir():
        raise DatasetError(f"the image folder {images} does not exist.")
    if data.suffix.lower() in JSON_LINES_SUFFIXES:
        records = list(_jsonl_records(data, images, task))
    else:
        records = coco_records(_read_json(data), data, images, task, encoder=encoder, lang=lang)
    if not records:
        raise DatasetError(f"{data} holds no examples for the task {task}.")
    return records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is no error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"{path} cannot be read as JSON ({e}). Give COCO JSON, or JSON Lines named *.jsonl or *.ndjson."
        ) from e
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: a COCO file is one JSON object with images, annotations and categories.")
    return document


# --- JSON Lines ------------------------------------------------------------------------------


def _jsonl_records(path: Path, images: Path, task: Task) -> Iterator[Record]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no error
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} cannot be read as UTF-8 text ({e}).") from e
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not JSON ({e}).") from e
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("image", "prefix", "suffix")):
            raise DatasetError(f'{where}: each line is {{"image": "file", "prefix": "prompt", "suffix": "answer"}}.')
        yield jsonl_record(row["image"], row["prefix"], row["suffix"], images, task, where)


_NEEDS_LANGUAGE: Final = ("caption", "describe", "answer", "question")


def _as_the_tools_send(prefix: str, where: str) -> str:
    """The prompt in the form the tools send it, so training teaches what serving asks: object
    names separated by " ; " (`detect star;circle` -> `detect star ; circle`), and a language
    code where PaliGemma's prompt has one (`answer en ...`)."""
    word, _, rest = prefix.partition(" ")
    if word in ("detect", "segment"):
        names = tuple(name.strip() for name in rest.split(";") if name.strip())
        if not names:
            raise DatasetError(f"{where}: the prefix {prefix!r} names no object (`{word} star ; circle`).")
        return prompts.detect(names) if word == "detect" else prompts.segment(names)
    if word in _NEEDS_LANGUAGE:
        lang = rest.split(" ", 1)[0]
        try:
            prompts.check_lang(lang)
        except PromptError as e:
            raise DatasetError(
                f"{where}: the prefix {prefix!r} has no language code after {word!r} (`{word} en ...`, as the "
                f"tools send it): {e}"
            ) from e
    return prefix


def jsonl_record(image: str, prefix: str, suffix: str, images: Path, task: Task, where: str) -> Record:
    """One JSON Lines example, checked: the prompt is one of `task`'s, a located answer parses cleanly."""
    path = images / image
    width, height = image_size(path, where)
    try:
        prefix = prompts.free_prompt(prefix)
    except PromptError as e:
        raise DatasetError(f"{where}: {e}") from e
    if prefix.split(" ", 1)[0] not in PROMPT_WORDS[task]:
        raise DatasetError(
            f"{where}: the prefix {prefix!r} is not a {task} prompt (it should start with "
            f"{' or '.join(PROMPT_WORDS[task])}); pick the --task the data is for."
        )
    prefix = _as_the_tools_send(prefix, where)
    instances: tuple[Instance, ...] = ()
    if task in ("detect", "segment"):
        parse = parsing.parse_detections if task == "detect" else parsing.parse_segments
        parsed = parse(suffix, width=width, height=height, strict=False)
        if parsed.issues:
            raise DatasetError(
                f"{where}: the suffix {suffix[:120]!r} does not read as a {task} answer: {parsed.issues[0].reason}"
            )
        instances = tuple(Instance(o.label, o.box.xyxy) for o in parsed.objects)
    return Record(path, width, height, prefix, suffix, instances)


# --- COCO ------------------------------------------------------------------------------------


def _list(document: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = document.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError(f"{path}: a COCO file needs {key!r}, a list of objects; it is missing or malformed.")
    return value


def _categories(document: dict[str, Any], path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for category in _list(document, "categories", path):
        cid, name = category.get("id"), category.get("name")
        if not isinstance(cid, int) or not isinstance(name, str):
            raise DatasetError(f"{path}: every category needs an integer 'id' and a 'name', got {category!r}.")
        try:
            names[cid] = prompts.check_text(name, "category name", prompts.MAX_OBJECT_CHARS)
        except PromptError as e:
            raise DatasetError(f"{path}: category {cid}: {e}") from e
        if ";" in name:
            raise DatasetError(f"{path}: category {cid} {name!r} contains ';', PaliGemma's object separator.")
    if not names:
        raise DatasetError(f"{path}: the COCO file has no categories.")
    return names


def _check_stated_size(image: dict[str, Any], seen: tuple[int, int], where: str) -> None:
    """The COCO entry's width and height, when given, must be the image's as a viewer sees it:
    the frame its boxes are in, and the one the tools send."""
    stated = image.get("width"), image.get("height")
    if not all(isinstance(v, int) for v in stated) or stated == seen:
        return
    turned = " (its EXIF orientation turns it; the file stores it the other way round)" if stated == seen[::-1] else ""
    raise DatasetError(
        f"{where}: the COCO file says {stated[0]}x{stated[1]}, but the image is {seen[0]}x{seen[1]} as a viewer "
        f"sees it{turned}. Boxes must be in that frame, which the tools send: export the annotations with the "
        'EXIF orientation applied ("auto-orient"), or correct the sizes.'
    )


def _box(annotation: dict[str, Any], width: int, height: int, where: str) -> tuple[float, float, float, float]:
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
        raise DatasetError(f"{where}: 'bbox' must be [x, y, width, height] in pixels, got {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0 or x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise DatasetError(f"{where}: bbox {bbox} is empty or outside its {width}x{height} image.")
    return max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)


def coco_rle(segmentation: Any, width: int, height: int, where: str) -> dict[str, Any]:
    """The COCO run-length encoding of a segmentation (polygons, RLE or compressed RLE), checked
    by decoding it once: a mask that does not decode, or not to its image's size, is refused."""
    from pycocotools import mask as coco_masks

    if isinstance(segmentation, list) and (
        not segmentation or not all(isinstance(p, list) and len(p) >= 6 for p in segmentation)
    ):
        raise DatasetError(
            f"{where}: 'segmentation' holds no polygon of three points or more (a box-only export writes []); "
            "give polygons or RLE for --task segment, or train --task detect on the boxes."
        )
    try:
        if isinstance(segmentation, list):
            rle: dict[str, Any] = coco_masks.merge(coco_masks.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = coco_masks.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict):
            rle = segmentation
        else:
            raise TypeError(f"expected polygons or RLE, got {type(segmentation).__name__}")
        decoded = decode_rle(rle)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise DatasetError(f"{where}: 'segmentation' is neither COCO polygons nor RLE ({e}).") from e
    if decoded.shape != (height, width):
        raise DatasetError(f"{where}: the mask is {decoded.shape[1]}x{decoded.shape[0]}, its image {width}x{height}.")
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """The (height, width) bool mask of a COCO run-length encoding."""
    from pycocotools import mask as coco_masks

    with warnings.catch_warnings():  # pycocotools' decoder trips numpy 2's __array__(copy=) deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded: np.ndarray = coco_masks.decode(rle).astype(bool)
    return decoded


def mask_in_box(mask: np.ndarray, box_xyxy: tuple[float, float, float, float]) -> np.ndarray:
    """The part of `mask` inside the box, resized to 64x64 in [-1, 1]: what the VQ-VAE encodes.

    The inverse of the tools' pasting (tools.masks.paste_mask): the box is cut with the same
    integer edges, and the 64x64 mask is stretched over it.
    """
    x0, y0 = int(box_xyxy[0]), int(box_xyxy[1])
    x1, y1 = max(x0 + 1, math.ceil(box_xyxy[2])), max(y0 + 1, math.ceil(box_xyxy[3]))
    crop = Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255)
    small = crop.resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 127.5 - 1.0


def reading_order(instances: Sequence[Instance]) -> list[Instance]:
    """Left to right by box centre (top to bottom where centres tie), as the tiny model answers."""
    return sorted(instances, key=lambda o: (o.box_xyxy[0] + o.box_xyxy[2], o.box_xyxy[1] + o.box_xyxy[3]))


def coco_records(
    document: dict[str, Any], path: Path, images: Path, task: Task, *, encoder: MaskEncoder | None, lang: str = "en"
) -> list[Record]:
    """The examples of a parsed COCO document (detect, segment or caption)."""
    if task not in ("detect", "segment", "caption"):
        raise DatasetError(f"COCO JSON holds boxes, masks or captions; for --task {task} give JSON Lines (*.jsonl).")
    if task == "segment" and encoder is None:
        raise DatasetError("segment targets need a VQ-VAE encoder (see docs/finetune.md); none was given.")
    files: dict[int, tuple[Path, int, int]] = {}
    for image in _list(document, "images", path):
        iid, name = image.get("id"), image.get("file_name")
        if not isinstance(iid, int) or not isinstance(name, str):
            raise DatasetError(f"{path}: every image needs an integer 'id' and a 'file_name', got {image!r}.")
        width, height = image_size(images / name, f"{path}: image {iid}")
        _check_stated_size(image, (width, height), f"{path}: image {iid} ({name})")
        files[iid] = (images / name, width, height)
    by_image: dict[int, list[dict[str, Any]]] = {iid: [] for iid in files}
    for annotation in _list(document, "annotations", path):
        iid = annotation.get("image_id")
        if iid not in by_image:
            raise DatasetError(
                f"{path}: annotation {annotation.get('id')} names image_id {iid!r}, which is not among the images."
            )
        by_image[iid].append(annotation)
    if task == "caption":
        return _caption_records(files, by_image, path, lang)
    categories = _categories(document, path)
    records = []
    for iid, (file, width, height) in files.items():
        found: dict[str, list[Instance]] = {}
        crowds: set[str] = set()
        for annotation in by_image[iid]:
            where = f"{path}: annotation {annotation.get('id')}"
            cid = annotation.get("category_id")
            if cid not in categories:
                raise DatasetError(f"{where}: category_id {cid!r} is not among the categories ({sorted(categories)}).")
            if annotation.get("iscrowd") == 1:  # a crowd region, not one object: neither listed nor called absent
                crowds.add(categories[cid])
                continue
            box = _box(annotation, width, height, where)
            rle = None
            if task == "segment":
                if "segmentation" not in annotation:
                    raise DatasetError(f"{where}: --task segment needs a 'segmentation' (polygons or RLE).")
                rle = coco_rle(annotation["segmentation"], width, height, where)
            found.setdefault(categories[cid], []).append(Instance(categories[cid], box, rle))
        names = list(found) or [name for name in categories.values() if name not in crowds]
        for name in names:
            ordered = reading_order(found.get(name, []))
            records.append(
                Record(file, width, height, *_target(task, name, ordered, width, height, encoder), tuple(ordered))
            )
    return records


def _target(
    task: Task, name: str, ordered: Sequence[Instance], width: int, height: int, encoder: MaskEncoder | None
) -> tuple[str, str]:
    """(prefix, suffix) for `name`'s objects, written by the tools' format code."""
    bins = [_at_least_one_bin(geometry.xyxy_to_bins(o.box_xyxy, width=width, height=height)) for o in ordered]
    if task == "detect":
        return prompts.detect((name,)), answer_text.detection_text([(name, b) for b in bins])
    if encoder is None or any(o.rle is None for o in ordered):  # asked of the encoding: .mask decodes
        raise DatasetError(f"segment targets for {name!r} need every mask and a VQ-VAE encoder.")
    masks64 = [mask_in_box(mask, o.box_xyxy) for o in ordered if (mask := o.mask) is not None]
    codes: list[list[int]] = [[int(c) for c in row] for row in encoder(np.stack(masks64))] if masks64 else []
    found = [(name, b, row) for b, row in zip(bins, codes, strict=True)]
    return prompts.segment((name,)), answer_text.segment_text(found)


def _at_least_one_bin(bins: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A box narrower than a location bin written one bin wide, so its target reads back as a box
    (the parser refuses a max edge not beyond the min edge)."""

    def widened(low: int, high: int) -> tuple[int, int]:
        if high > low:
            return low, high
        return (low, low + 1) if low < geometry.LOC_SCALE else (geometry.LOC_SCALE - 1, geometry.LOC_SCALE)

    (y_min, y_max), (x_min, x_max) = widened(bins[0], bins[2]), widened(bins[1], bins[3])
    return y_min, x_min, y_max, x_max


def _caption_records(
    files: dict[int, tuple[Path, int, int]], by_image: dict[int, list[dict[str, Any]]], path: Path, lang: str
) -> list[Record]:
    records = []
    for iid, (file, width, height) in files.items():
        for annotation in by_image[iid]:
            caption = annotation.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise DatasetError(f"{path}: annotation {annotation.get('id')} has no 'caption' text (--task caption).")
            records.append(Record(file, width, height, prompts.caption("short", lang), caption.strip()))
    return records


def split(records: Sequence[Record], eval_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, held out): whole images go to one side, `eval_fraction` of them held out (seeded)."""
    if not 0 <= eval_fraction < 1:
        raise DatasetError(f"--eval-split must be in [0, 1), got {eval_fraction}.")
    files = sorted({r.image for r in records})
    held = math.ceil(eval_fraction * len(files)) if eval_fraction > 0 and len(files) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(files))
    held_out = {files[i] for i in order[:held]}
    return [r for r in records if r.image not in held_out], [r for r in records if r.image in held_out]
