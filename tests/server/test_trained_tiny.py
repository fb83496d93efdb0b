"""`--model tiny` resolves to the trained checkpoint shipped with the project, small and consistent."""

from __future__ import annotations

import json
import subprocess
import sys

from server.model_source import TINY_NAME, TINY_TRAINED_DIR, resolve
from server.presets import max_model_len
from server.tiny_model import is_random_tiny_model, is_tiny_model
from tools.tiny_shapes_model import TINY_SHAPES_INPUT_PX, TINY_SHAPES_MODEL, is_tiny_shapes_model

MAX_CHECKPOINT_BYTES = 25 * 1024 * 1024


def test_tiny_resolves_to_the_shipped_trained_checkpoint() -> None:
    source = resolve(TINY_NAME)
    assert source.location == str(TINY_TRAINED_DIR.resolve())
    assert source.served_name == TINY_SHAPES_MODEL  # the name the tools pick the tiny VQ-VAE by
    assert is_tiny_shapes_model(source.served_name)
    assert source.is_local and source.is_tiny
    assert is_tiny_model(TINY_TRAINED_DIR) and not is_random_tiny_model(TINY_TRAINED_DIR)


def test_it_is_small() -> None:
    weights = sum(p.stat().st_size for p in TINY_TRAINED_DIR.iterdir() if p.is_file())
    assert weights <= MAX_CHECKPOINT_BYTES


def test_both_engines_agree_on_the_number_of_image_tokens() -> None:
    config = json.loads((TINY_TRAINED_DIR / "config.json").read_text())
    processor = json.loads((TINY_TRAINED_DIR / "processor_config.json").read_text())
    vision = config["vision_config"]
    tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    image_processor = processor.get("image_processor", processor)
    assert image_processor["image_seq_length"] == tokens
    assert config["text_config"].get("num_image_tokens", tokens) == tokens
    served_len = resolve(TINY_NAME).max_model_len
    assert served_len == max_model_len(tokens) == 1280  # 324 image tokens + room for prompt and answer


def test_the_tools_know_the_input_size_of_the_shipped_checkpoint() -> None:
    # Its name does not say it, so the tools know it (tests/tools/test_images.py: they send that).
    config = json.loads((TINY_TRAINED_DIR / "config.json").read_text())
    assert config["vision_config"]["image_size"] == TINY_SHAPES_INPUT_PX


def test_serve_tiny_dry_run_shows_the_checkpoint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--model", "tiny", "--dry-run", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(TINY_TRAINED_DIR.resolve()) in result.stdout
    assert f"--served-model-name {TINY_SHAPES_MODEL}" in result.stdout
