"""Fine-tuning data: COCO and JSON Lines to examples written by the tools' format code, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tools import parsing
from tools.masks import paste_mask
from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH
from tools.vae_checkpoint import load_vae_decoder
from training import finetune_data, finetune_eval, star_scenes, vae
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


def test_json_lines_segment_targets_are_scored_against_their_own_codes(coco: Path, tmp_path: Path) -> None:
    """JSON Lines carry <seg> codes, not masks: the truth is the codes decoded by the same VQ-VAE,
    so answering the targets themselves scores 1 (it scored 0 when objects without masks were skipped)."""
    model = vae.load_vae(TINY_SHAPES_VAE_PATH)
    from_coco = finetune_data.load_records(
        coco, coco.parent / "images", "segment", encoder=lambda m: vae.encode_masks(model, m)
    )
    lines = [{"image": r.image.name, "prefix": r.prefix, "suffix": r.suffix} for r in from_coco if r.suffix]
    data = tmp_path / "seg.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    records = finetune_data.load_records(data, coco.parent / "images", "segment")
    assert records and all(o.mask is None for r in records for o in r.instances)
    decoder = load_vae_decoder(TINY_SHAPES_VAE_PATH, download=False)
    assert finetune_eval.score("segment", records, [r.suffix for r in records], decoder) == pytest.approx(1.0)
    assert finetune_eval.score("segment", records, ["" for _ in records], decoder) == 0.0


def test_nothing_to_find_is_not_scored(coco: Path) -> None:
    image = coco.parent / "images" / json.loads(coco.read_text())["images"][0]["file_name"]
    nothing = [Record(image, 160, 120, "detect star", "", ())]
    assert finetune_eval.score("detect", nothing, ["<loc0010><loc0010><loc0500><loc0500> star"]) is None
    assert finetune_eval.score("detect", nothing, [""]) is None


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
    pytest.param(lambda d: d["images"][0].update(width=7), "the COCO file says 7x", id="stated-size-differs"),
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
    pytest.param(
        '{"image": "IMG", "prefix": "answer How many?", "suffix": "1"}', "answer", "no language code", id="no-lang"
    ),
    pytest.param('{"image": "IMG", "prefix": "caption", "suffix": "x"}', "caption", "no language code", id="caption"),
    pytest.param('{"image": "IMG", "prefix": "detect ;", "suffix": ""}', "detect", "names no object", id="no-names"),
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


def _write_coco(folder: Path, image: Image.Image, box_xywh: list[float], name: str = "a.jpg", **save: Any) -> Path:
    """A one-image, one-box COCO file in the frame a viewer sees (`width`/`height` given as seen)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    image.save(folder / "images" / name, **save)
    seen = ImageOps.exif_transpose(Image.open(folder / "images" / name)).size
    document = {
        "images": [{"id": 1, "file_name": name, "width": seen[0], "height": seen[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box_xywh}],
        "categories": [{"id": 1, "name": "dot"}],
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(document))
    return path


def test_an_exif_rotated_photo_is_trained_in_the_frame_a_viewer_sees(tmp_path: Path) -> None:
    """Stored 200 wide and 100 high with orientation 6: seen (and sent by the tools) 100 x 200.
    Its box is in the seen frame, the target's bins too, and training gets the upright pixels."""
    stored = Image.new("RGB", (200, 100), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 100))  # a red band at the stored left: the seen top
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _write_coco(tmp_path, stored, [10, 5, 60, 30], exif=exif.tobytes(), quality=95)
    (record,) = finetune_data.load_records(data, tmp_path / "images", "detect")
    assert (record.width, record.height) == (100, 200)
    found = parsing.parse_detections(record.suffix, width=100, height=200)
    assert found.objects[0].box.xyxy == pytest.approx((10, 5, 70, 35), abs=0.2)
    upright = np.asarray(finetune_data.load_upright(record.image, "test"))
    assert upright.shape == (200, 100, 3)
    assert upright[5, 50, 0] > 200 and upright[5, 50, 1] < 60  # red at the top
    assert upright[190, 50].min() > 200  # white at the bottom


def test_sizes_stated_in_the_files_frame_name_the_exif_turn(tmp_path: Path) -> None:
    stored = Image.new("RGB", (200, 100), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _write_coco(tmp_path, stored, [10, 5, 60, 30], exif=exif.tobytes())
    document = json.loads(data.read_text())
    document["images"][0].update(width=200, height=100)  # the stored size, as some exporters write
    data.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="EXIF orientation turns it"):
        finetune_data.load_records(data, tmp_path / "images", "detect")


@pytest.mark.parametrize(
    ("image", "seen"),
    [
        pytest.param(Image.new("I;16", (32, 32), 40000), 156, id="16-bit-grey-scaled-not-white"),
        pytest.param(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), 255, id="transparent-on-white"),
    ],
)
def test_training_pixels_are_the_pixels_the_tools_send(tmp_path: Path, image: Image.Image, seen: int) -> None:
    data = _write_coco(tmp_path, image, [2, 2, 10, 10], name="a.png")
    (record,) = finetune_data.load_records(data, tmp_path / "images", "detect")
    pixels = np.asarray(finetune_data.load_upright(record.image, "test"))
    assert pixels.shape == (32, 32, 3) and int(pixels.mean()) == seen


def test_a_damaged_image_is_named_before_training(tmp_path: Path) -> None:
    data = _write_coco(tmp_path, Image.effect_noise((64, 64), 40).convert("RGB"), [2, 2, 10, 10], name="a.png")
    png = (tmp_path / "images" / "a.png").read_bytes()
    (tmp_path / "images" / "a.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(DatasetError, match=r"image 1.*a.png.*damaged or truncated"):
        finetune_data.load_records(data, tmp_path / "images", "detect")


def test_a_box_smaller_than_a_bin_still_reads_back_as_a_box(tmp_path: Path) -> None:
    data = _write_coco(tmp_path, Image.new("RGB", (3000, 2000), (255, 255, 255)), [1500, 1000, 2, 1.5])
    (record,) = finetune_data.load_records(data, tmp_path / "images", "detect")
    found = parsing.parse_detections(record.suffix, width=3000, height=2000)
    assert found.issues == () and len(found.objects) == 1


@pytest.mark.parametrize(
    "segmentation",
    [pytest.param([], id="box-only-export"), pytest.param([[1, 1, 5, 5]], id="two-point-polygon")],
)
def test_a_segmentation_without_a_polygon_says_so(tmp_path: Path, segmentation: list[Any]) -> None:
    with pytest.raises(DatasetError, match="no polygon of three points"):
        finetune_data.coco_rle(segmentation, 10, 10, "annotation 1")


@pytest.mark.parametrize("suffix", [".JSONL", ".ndjson"])
def test_json_lines_by_any_usual_name_and_with_a_byte_order_mark(tmp_path: Path, coco: Path, suffix: str) -> None:
    first = json.loads(coco.read_text())["images"][0]["file_name"]
    data = tmp_path / f"d{suffix}"
    data.write_text(json.dumps({"image": first, "prefix": "caption en", "suffix": "a star"}) + "\n", "utf-8-sig")
    (record,) = finetune_data.load_records(data, coco.parent / "images", "caption")
    assert record.suffix == "a star"


def test_a_caption_equal_to_any_of_the_images_references_is_right(coco: Path) -> None:
    image = coco.parent / "images" / json.loads(coco.read_text())["images"][0]["file_name"]
    references = ["a red star", "a star in red", "one red star", "a star", "red star on white"]
    records = [Record(image, 160, 120, "caption en", text) for text in references]
    assert finetune_eval.score("caption", records, ["a star"] * 5) == 1.0  # was 0.2: one reference of five
    assert finetune_eval.score("caption", records, ["a blue star"] * 5) == 0.0


def test_crowd_regions_are_neither_objects_nor_absence(tmp_path: Path) -> None:
    """COCO's iscrowd=1 marks a region of many objects: not one box to list, nor a class to call absent."""
    data = _write_coco(tmp_path, Image.new("RGB", (100, 100), (255, 255, 255)), [10, 10, 30, 30], name="a.png")
    document = json.loads(data.read_text())
    document["categories"].append({"id": 2, "name": "crowd"})
    document["annotations"].append({"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40], "iscrowd": 1})
    data.write_text(json.dumps(document))
    records = finetune_data.load_records(data, tmp_path / "images", "detect")
    assert [(r.prefix, len(r.instances)) for r in records] == [("detect dot", 1)]
    document["annotations"] = document["annotations"][1:]  # only the crowd: no example says "nothing"
    data.write_text(json.dumps(document))
    records = finetune_data.load_records(data, tmp_path / "images", "detect")
    assert [(r.prefix, r.suffix) for r in records] == [("detect dot", "")]


def test_masks_are_kept_run_length_encoded() -> None:
    """A 4000 x 3000 mask (12 MB as bools) is kept in a few kilobytes and decodes unchanged."""
    mask = np.zeros((3000, 4000), dtype=bool)
    mask[100:900, 200:1800] = True
    mask[1500:2500, 3000:3900] = True
    instance = finetune_data.Instance.with_mask("x", (200.0, 100.0, 3900.0, 2500.0), mask)
    assert instance.rle is not None and len(instance.rle["counts"]) < 16 * 1024
    decoded = instance.mask
    assert decoded is not None and decoded.dtype == np.bool_ and np.array_equal(decoded, mask)
    assert finetune_data.Instance("x", (0.0, 0.0, 1.0, 1.0)).mask is None


def test_json_lines_prompts_are_trained_as_the_tools_send_them(tmp_path: Path, coco: Path) -> None:
    first = json.loads(coco.read_text())["images"][0]["file_name"]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"image": first, "prefix": "detect star;circle", "suffix": ""}) + "\n")
    (record,) = finetune_data.load_records(data, coco.parent / "images", "detect")
    assert record.prefix == "detect star ; circle"
