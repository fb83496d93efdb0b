"""The batch command line over real folders, against the real tiny server: records, COCO,
annotated images, a corrupt file, an interruption and the resumed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pycocotools.coco import COCO

from clients.batch import find_images
from tests.images import gradient_image
from tests.server_pool import TinyServer

DETECTION = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0500><loc0500><loc1000><loc0900> dog"
FORCED = json.dumps({"structured_outputs": {"choice": [DETECTION]}})


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        sub = folder / ("nested" if i % 3 == 0 else "")
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        gradient_image(120 + i, 90, seed=i).save(path)
        paths.append(path.resolve())
    return paths


def cli(*args: str, **kwargs: Any) -> list[str]:
    return [sys.executable, "-m", "clients.cli", *args]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_find_images_takes_files_folders_and_globs_once(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", 4)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "annotated").mkdir()
    (tmp_path / "photos" / "annotated" / "x.png").write_bytes(b"")
    found = find_images(
        [str(tmp_path / "photos"), str(tmp_path / "photos" / "*.png"), str(paths[0])],
        exclude=[tmp_path / "photos" / "annotated"],
    )
    assert sorted(found) == sorted(paths)
    assert len(found) == len(set(found))


def test_a_symlink_and_its_target_are_one_image_and_a_broken_link_keeps_its_name(tmp_path: Path) -> None:
    (real,) = make_images(tmp_path / "photos", 1)
    (tmp_path / "photos" / "link.png").symlink_to(real)
    (tmp_path / "broken.png").symlink_to(tmp_path / "missing.png")
    for given in (tmp_path / "photos", tmp_path / "photos" / "*.png"):
        (found,) = find_images([str(given)])  # once, under the name met first
        assert found.resolve() == real.resolve() and found.parent == tmp_path / "photos"
    assert find_images([str(tmp_path / "*.png")]) == [tmp_path / "broken.png"]  # the name the user gave


@pytest.mark.vllm
def test_folder_with_a_corrupt_image_coco_and_drawings(tiny_server: TinyServer, tmp_path: Path) -> None:
    images = make_images(tmp_path / "in", 5)
    corrupt = tmp_path / "in" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    output, coco_path, drawn = tmp_path / "out.jsonl", tmp_path / "coco.json", tmp_path / "drawn"
    command = cli("detect", str(tmp_path / "in"), "--objects", "cat ; dog", "-o", str(output), "--coco",
                  str(coco_path), "--annotate-dir", str(drawn), "--base-url", tiny_server.base_url,
                  "--extra-body", FORCED, "--concurrency", "3", "--no-progress")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1  # one image failed
    by_path = {r["path"]: r for r in records(output)}
    assert set(by_path) == {str(p) for p in [*images, corrupt.resolve()]}
    assert by_path[str(corrupt.resolve())]["ok"] is False
    assert "broken.jpg' is not an image format that can be read" in by_path[str(corrupt.resolve())]["error"]
    ok = by_path[str(images[1])]["result"]
    assert [o["label"] for o in ok["objects"]] == ["cat", "dog"] and ok["image_width"] == 121
    coco = COCO(str(coco_path))  # pycocotools reads it
    assert len(coco.getImgIds()) == 5 and len(coco.getAnnIds()) == 10
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"cat", "dog"}
    widths = []
    for picture in drawn.glob("*.png"):
        with Image.open(picture) as opened:
            widths.append(opened.width)
    assert sorted(widths) == [120, 121, 122, 123, 124]  # each image drawn at its own size
    assert "6 images: 5 done now, 0 done before, 1 failed now" in result.stderr


@pytest.mark.vllm
def test_interrupted_then_resumed_accounts_for_every_image_once(tiny_server: TinyServer, tmp_path: Path) -> None:
    images = make_images(tmp_path / "in", 24)
    output = tmp_path / "out.jsonl"
    command = cli("detect", str(tmp_path / "in"), "--objects", "cat", "-o", str(output), "--base-url",
                  tiny_server.base_url, "--extra-body", FORCED, "--concurrency", "1", "--no-progress")  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not output.exists() or len(records(output)) < 3):
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert "run the same command again" in stderr
    first = records(output)
    assert 3 <= len(first) < 24
    with output.open("a") as torn:
        torn.write('{"path": "/half/written", "ok": tr')  # what a killed run can leave behind

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    final = records(output)
    assert sorted(r["path"] for r in final) == sorted(str(p) for p in images)  # each image exactly once
    assert all(r["ok"] for r in final)
    assert f"{24 - len(first)} done now, {len(first)} done before" in again.stderr


@pytest.mark.vllm
def test_endpoint_failures_are_recorded_and_retried_on_the_next_run(tiny_server: TinyServer, tmp_path: Path) -> None:
    images = make_images(tmp_path / "in", 3)
    output = tmp_path / "out.jsonl"
    base = ["detect", str(tmp_path / "in"), "--objects", "cat", "-o", str(output), "--no-progress"]
    down = subprocess.run(cli(*base, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
                          capture_output=True, text=True, timeout=120, env={**os.environ})  # fmt: skip
    assert down.returncode == 1
    assert all(not r["ok"] and r["retry"] and r["error_type"] == "EndpointUnavailableError" for r in records(output))
    up = subprocess.run(cli(*base, "--base-url", tiny_server.base_url, "--extra-body", FORCED),
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert up.returncode == 0, up.stderr
    final = records(output)
    assert len(final) == 3 and all(r["ok"] for r in final) and {r["path"] for r in final} == {str(p) for p in images}


def test_another_prompt_into_the_same_output_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text(json.dumps({"path": "/x.png", "ok": True, "result": {"prompt": "detect dog"}}) + "\n")
    make_images(tmp_path / "in", 1)
    result = subprocess.run(cli("detect", str(tmp_path / "in"), "--objects", "cat", "-o", str(output), "--no-progress"),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "holds results for the prompt 'detect dog'" in result.stderr


def test_a_bad_image_is_tried_again_once_its_file_is_replaced(tmp_path: Path) -> None:
    """Not while it stays as it was (its error would be the same), but after the user fixes it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"\x89PNG not really")
    output = tmp_path / "out.jsonl"
    down = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    base = ["ocr", str(folder), "-o", str(output), "--no-progress", *down]

    def run() -> dict[str, Any]:
        subprocess.run(cli(*base), capture_output=True, text=True, timeout=120)
        (record,) = records(output)
        return record

    first = run()
    assert first["error_type"] == "ImageError" and not first["retry"]
    assert run() == first  # unchanged: not tried again
    gradient_image(32, 24).save(folder / "x.png")
    assert run()["error_type"] == "EndpointUnavailableError"  # tried again: it now reached the endpoint
