"""The README's main job, `paligemma demo`, from a clean cache, as a new user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from clients.demo import DEMO_SCENE_SIZE

pytestmark = pytest.mark.vllm


def test_demo_serves_the_trained_model_checks_its_answers_draws_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    drawn = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "demo", "--out", str(drawn)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "paligemma2-tiny-shapes" in out and "random nonsense" not in out
    for call, result_type in [
        ("caption_image(scene)", "CaptionResult"),
        ("caption_image(scene, detail='long')", "CaptionResult"),
        ("read_text(scene)", "TextResult"),
        ("answer_visual_question(scene, 'how many circles are there?')", "AnswerResult"),
        ("locate_objects(scene, ['circle', 'square', 'triangle'])", "Detections"),
        ("segment_objects(scene, 'circle')", "Segments"),
    ]:
        assert f"{call} -> {result_type}" in out
    # Every answer is printed beside what the scene holds and judged; the count adds up.
    verdicts = re.findall(r"^  (right|WRONG)$", out, flags=re.MULTILINE)
    right = re.search(r"(\d+) of (\d+) answers right", out)
    assert right is not None, out
    assert int(right.group(2)) == len(verdicts) >= 10 and int(right.group(1)) == verdicts.count("right")
    assert "Masks were not decoded" not in out  # the shipped tiny VQ-VAE is found with no configuration
    with Image.open(drawn) as image:
        assert image.width >= DEMO_SCENE_SIZE[0] and image.height >= DEMO_SCENE_SIZE[1]  # the scene plus a legend
    assert out.rstrip().endswith("Server stopped.")


def test_demo_reads_a_users_image_as_the_tools_do_before_serving(tmp_path: Path) -> None:
    """A file that is no image stops the demo at once with the tools' message (no server started,
    no traceback); a photo is taken as the tools see it, EXIF orientation applied."""
    from clients import demo

    (tmp_path / "notes.png").write_text("not an image")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "demo", "--image", str(tmp_path / "notes.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "is not an image format that can be read" in result.stderr
    assert "Traceback" not in result.stderr and "Starting vLLM" not in result.stdout
    assert time.monotonic() - started < 60
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 x 40, seen 40 x 60
    Image.new("RGB", (60, 40), (255, 255, 255)).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    assert demo.load_image(tmp_path / "photo.jpg").image.size == (40, 60)
