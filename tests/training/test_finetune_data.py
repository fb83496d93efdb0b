"""Fine-tuning data: COCO and JSON Lines to examples written by the tools' format code, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tools import parsing
from tools.masks import paste_mask
from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH
from tools.vae_checkpoint import load_vae_decoder
from training import finetune_data, star_scenes, vae
from training.finetune_data import DatasetError, Record


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six generated star scenes as COCO (boxes and polygons)."""
    return star_scenes.write_coco(tmp_path_factory.mktemp("stars"), 6, seed=3, max_side=160)


def test_star_scenes_are_seeded_and_hold_a_star() -> None:
    a = star_scenes.make_star_scene(np.random.default_rng(7))
    b = star_scenes.make_star_scene(np.random.default_rng(7))
    assert a.objects == b.objects and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert star_scenes.STAR in [o.label for o in a.objects]
    for o in a.objects:
        x0, y0, x1, y1 = o.box_xyxy
        assert 0 <= x0 < x1 <= a.image.width and 0 <= y0 < y1 <= a.image.height
        xs, ys = [p[0] for p in o.polygon_xy], [p[1] for p in o.polygon_xy]
        assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx((x0, y0, x1, y1), abs=1e-6)


def test_coco_detect_targets_read_back_as_the_truth(coco: Path) -> None:
    records = finetune_data.load_records(coco, coco.parent / "images", "detect")
    document = json.loads(coco.read_text())
    present = {(a["image_id"], a["category_id"]) for a in document["annotations"]}
    assert len(records) == len(present)  # one example per image and category present
    for record in records:
        name = record.prefix.removeprefix("detect ")
        assert record.instances and all(o.label == name for o in record.instances)
        parsed = parsing.parse_detections(record.suffix, width=record.width, height=record.height)
        assert not parsed.issues
        centres = [d.box.xyxy[0] + d.box.xyxy[2] for d in parsed.objects]
        assert centres == sorted(centres)  # left to right
        for d, o in zip(parsed.objects, record.instances, strict=True):
            assert d.label == name
            assert d.box.xyxy == pytest.approx(o.box_xyxy, abs=max(record.width, record.height) / 1023)


def test_coco_segment_targets_decode_to_the_masks(coco: Path) -> None:
    model = vae.load_vae(TINY_SHAPES_VAE_PATH)
    records = finetune_data.load_records(
        coco, coco.parent / "images", "segment", encoder=lambda m: vae.encode_masks(model, m)
    )
    decoder = load_vae_decoder(TINY_SHAPES_VAE_PATH, download=False)
    ious = []
    for record in records:
        if record.prefix != "segment square":  # the tiny VQ-VAE knows circles, squares and triangles
            continue
        parsed = parsing.parse_segments(record.suffix, width=record.width, height=record.height, decoder=decoder)
        assert not parsed.issues and len(parsed.objects) == len(record.instances)
        for s, o in zip(parsed.objects, record.instances, strict=True):
            assert o.mask is not None and s.mask is not None
            ious.append((s.mask & o.mask).sum() / (s.mask | o.mask).sum())
    assert ious and min(ious) > 0.8


def test_mask_in_box_inverts_the_tools_pasting() -> None:
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:30, 20:60] = True
    box = (20.0, 10.0, 60.0, 30.0)
    small = finetune_data.mask_in_box(mask, box)
    assert small.shape == (64, 64) and small.min() == pytest.approx(1.0)
    assert np.array_equal(paste_mask(small, box, width=80, height=50), mask)


def test_images_without_annotations_teach_saying_nothing(tmp_path: Path, coco: Path) -> None:
    document = json.loads(coco.read_text())
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != 1]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(document))
    records = [
        r
        for r in finetune_data.load_records(path, coco.parent / "images", "detect")
        if r.image.name.endswith("00000.png")
    ]
    assert sorted(r.prefix for r in records) == sorted(f"detect {n}" for n in star_scenes.LABELS)
    assert all(r.suffix == "" and r.instances == () for r in records)


def test_json_lines_are_taken_as_written(tmp_path: Path, coco: Path) -> None:
    first = json.loads(coco.read_text())["images"][0]["file_name"]
    rows = [
        {"image": first, "prefix": "caption en", "suffix": "a red star"},
        {"image": first, "prefix": "describe en", "suffix": "a red star at the top"},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = finetune_data.load_records(data, coco.parent / "images", "caption")
    assert [(r.prefix, r.suffix) for r in records] == [
        ("caption en", "a red star"),
        ("describe en", "a red star at the top"),
    ]


def _coco_with(coco: Path, change: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(coco.read_text())
    change(document)
    return document


BAD_COCO = [
    pytest.param(lambda d: d.pop("images"), "needs 'images'", id="no-images"),
    pytest.param(
        lambda d: d["annotations"][0].update(category_id=99), "category_id 99 is not among", id="unknown-category"
    ),
    pytest.param(
        lambda d: d["annotations"][0].update(image_id=999), "image_id 999, which is not among", id="unknown-image"
    ),
    pytest.param(lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "'bbox' must be", id="short-bbox"),
    pytest.param(lambda d: d["annotations"][0].update(bbox=[0, 0, 5000, 5]), "outside its", id="bbox-outside"),
    pytest.param(lambda d: d["images"][0].update(file_name="nowhere.png"), "does not exist", id="missing-image-file"),
    pytest.param(lambda d: d["categories"][0].update(name="star ; moon"), "';'", id="separator-in-name"),
    pytest.param(lambda d: d["categories"][0].update(name="<loc0001>"), "control token", id="token-in-name"),
]


@pytest.mark.parametrize(("change", "message"), BAD_COCO)
def test_bad_coco_says_what_is_wrong(tmp_path: Path, coco: Path, change: Any, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_coco_with(coco, change)))
    with pytest.raises(DatasetError, match=message):
        finetune_data.load_records(path, coco.parent / "images", "detect")


BAD_LINES = [
    pytest.param("{not json", "caption", "not JSON", id="not-json"),
    pytest.param('{"image": "IMG", "prefix": "caption en"}', "caption", "each line is", id="no-suffix"),
    pytest.param(
        '{"image": "IMG", "prefix": "ocr", "suffix": "x"}', "caption", "is not a caption prompt", id="wrong-task"
    ),
    pytest.param(
        '{"image": "IMG", "prefix": "detect star", "suffix": "<loc0001> star"}',
        "detect",
        "does not read",
        id="bad-answer",
    ),
    pytest.param('{"image": "gone.png", "prefix": "ocr", "suffix": "x"}', "ocr", "does not exist", id="missing-image"),
]


@pytest.mark.parametrize(("line", "task", "message"), BAD_LINES)
def test_bad_json_lines_say_where(tmp_path: Path, coco: Path, line: str, task: Any, message: str) -> None:
    first = json.loads(coco.read_text())["images"][0]["file_name"]
    data = tmp_path / "d.jsonl"
    data.write_text(line.replace("IMG", first) + "\n")
    with pytest.raises(DatasetError, match=message) as caught:
        finetune_data.load_records(data, coco.parent / "images", task)
    assert f"{data}:1" in str(caught.value)


@pytest.mark.parametrize(
    ("data_name", "task", "message"),
    [
        pytest.param("annotations.json", "ocr", "give JSON Lines", id="coco-for-ocr"),
        pytest.param("annotations.json", "segment", "VQ-VAE encoder", id="segment-without-encoder"),
        pytest.param("nothing.json", "detect", "does not exist", id="no-data-file"),
    ],
)
def test_unusable_requests_are_refused(coco: Path, data_name: str, task: Any, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        finetune_data.load_records(coco.parent / data_name, coco.parent / "images", task)


def test_the_split_keeps_images_whole() -> None:
    records = [Record(Path(f"{i % 10}.png"), 10, 10, f"detect {i}", "") for i in range(30)]
    train, held = finetune_data.split(records, 0.2, seed=0)
    assert len({r.image for r in held}) == 2 and len(train) + len(held) == 30
    assert not {r.image for r in train} & {r.image for r in held}
    assert finetune_data.split(records, 0.2, seed=0) == (train, held)
    assert finetune_data.split(records, 0.0, seed=0) == (records, [])
