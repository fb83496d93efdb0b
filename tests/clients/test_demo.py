"""The README's main job, `paligemma demo`, from a clean cache, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm


def test_demo_builds_serves_runs_every_tool_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "demo"], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Building the tiny random-weight PaliGemma 2" in out
    assert (tmp_path / "cache" / "paligemma-tools" / "tiny-paligemma2" / "model.safetensors").is_file()
    assert "random nonsense" in out
    assert "openai SDK, prompt 'caption en' on chelsea.png" in out
    for call, result_type in [
        ("caption_image(photo)", "CaptionResult"),
        ("caption_image(photo, detail='long')", "CaptionResult"),
        ("read_text(photo)", "TextResult"),
        ("answer_visual_question(photo, 'what animal is this?')", "AnswerResult"),
        ("generate_question(photo, 'a cat')", "QuestionResult"),
        ("locate_objects(photo, ['cat', 'eye'])", "Detections"),
        ("segment_objects(photo, 'cat')", "Segments"),
    ]:
        assert f"{call} -> {result_type}" in out
    assert '"image_width": 451' in out and '"image_height": 300' in out  # the real photo's size
    assert "Masks were not decoded" in out and "vae-oid.npz" in out  # offline: says how to get them
    assert out.rstrip().endswith("Server stopped.")
