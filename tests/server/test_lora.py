"""`--lora NAME=DIR`: adapters read and checked, and vLLM's LoRA options derived from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server import lora, serve
from server.lora import AdapterError, LoraAdapter
from server.vllm_command import ServeOptions


def adapter_dir(tmp_path: Path, name: str = "a", **config: Any) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings = {"peft_type": "LORA", "r": 8, "target_modules": r".*language_model.*\.(q_proj|v_proj)", **config}
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        pytest.param((8,), 8, id="exact"),
        pytest.param((4,), 8, id="rounded-up"),
        pytest.param((8, 24), 32, id="largest-of-several"),
        pytest.param((1,), 1, id="one"),
        pytest.param((300,), 320, id="between-256-and-512"),
    ],
)
def test_max_lora_rank_is_the_smallest_vllm_accepts(ranks: tuple[int, ...], expected: int) -> None:
    adapters = tuple(LoraAdapter(f"a{i}", Path("/x"), r) for i, r in enumerate(ranks))
    assert lora.max_lora_rank(adapters) == expected


def test_a_rank_past_vllms_largest_is_refused() -> None:
    with pytest.raises(AdapterError, match="larger than vLLM serves"):
        lora.max_lora_rank((LoraAdapter("a", Path("/x"), 1024),))


def test_the_vllm_options(tmp_path: Path) -> None:
    adapters = lora.read_adapters(
        [f"star={adapter_dir(tmp_path, 'star')}", f"moon={adapter_dir(tmp_path, 'moon', r=16)}"]
    )
    assert lora.lora_args(adapters, "base") == [
        "--enable-lora",
        "--lora-modules",
        f"star={(tmp_path / 'star').resolve()}",
        f"moon={(tmp_path / 'moon').resolve()}",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "2",
    ]
    assert lora.lora_args((), "base") == []
    banner = "\n".join(lora.banner_lines(adapters))
    assert "star  (rank 8" in banner and "moon  (rank 16" in banner and "PALIGEMMA_MODEL" in banner


def test_the_rank_pattern_counts(tmp_path: Path) -> None:
    folder = adapter_dir(tmp_path, rank_pattern={"q_proj": 32})
    assert lora.read_adapter("a", folder).rank == 32


@pytest.mark.parametrize(
    ("option", "message"),
    [
        pytest.param("star", "NAME=DIR", id="no-equals"),
        pytest.param("star=", "NAME=DIR", id="no-folder"),
        pytest.param("st ar=/x", "letters, digits", id="space-in-name"),
        pytest.param("=/x", "letters, digits", id="no-name"),
    ],
)
def test_malformed_options_are_refused(option: str, message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        lora.parse_lora_option(option)


@pytest.mark.parametrize(
    ("config", "remove", "message"),
    [
        pytest.param({}, "adapter_config.json", "no adapter_config.json", id="not-an-adapter"),
        pytest.param({}, "adapter_model.safetensors", "no adapter_model", id="no-weights"),
        pytest.param({"peft_type": "IA3"}, None, "serves LoRA only", id="not-lora"),
        pytest.param({"r": 0}, None, "no valid rank", id="bad-rank"),
        pytest.param({"use_dora": True}, None, "DoRA", id="dora"),
        pytest.param(
            {"target_modules": ["vision_tower.encoder.layers.0.self_attn.q_proj"]}, None, "vision tower", id="tower"
        ),
    ],
)
def test_unservable_adapters_are_refused(
    tmp_path: Path, config: dict[str, Any], remove: str | None, message: str
) -> None:
    folder = adapter_dir(tmp_path, **config)
    if remove:
        (folder / remove).unlink()
    with pytest.raises(AdapterError, match=message):
        lora.read_adapter("a", folder)


def test_names_are_unique_and_not_the_base_models(tmp_path: Path) -> None:
    folder = adapter_dir(tmp_path)
    with pytest.raises(AdapterError, match="given twice"):
        lora.read_adapters([f"a={folder}", f"a={folder}"])
    with pytest.raises(AdapterError, match="base model's served name"):
        lora.lora_args(lora.read_adapters([f"base={folder}"]), "base")


def test_serve_dry_run_adds_the_lora_options(tmp_path: Path) -> None:
    folder = adapter_dir(tmp_path, "star")
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--model", "tiny", "--lora", f"star={folder}", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = f"--enable-lora --lora-modules star={folder.resolve()} --max-lora-rank 8 --max-loras 1"
    assert result.stdout.strip().endswith(expected)


def test_serve_refuses_a_folder_without_an_adapter(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--model", "tiny", "--lora", f"x={tmp_path}", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no adapter_config.json" in result.stderr


def test_the_banner_lists_the_adapters(tmp_path: Path) -> None:
    adapters = lora.read_adapters([f"star={adapter_dir(tmp_path, 'star')}"])
    the_plan = serve.plan(ServeOptions(model="tiny", loras=adapters), device="cpu")
    banner = serve.usage_banner(the_plan.command, "cpu")
    assert "star  (rank 8" in banner and "as model 'paligemma2-tiny-shapes'" in banner


def _with_weights(folder: Path, width: int) -> Path:
    from safetensors.numpy import save_file

    name = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({name: np.zeros((8, width), dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.mark.parametrize(
    ("width", "fits"), [pytest.param(128, True, id="same-width"), pytest.param(64, False, id="other")]
)
def test_an_adapter_for_a_model_of_another_width_is_refused_before_vllm_starts(
    tmp_path: Path, width: int, fits: bool
) -> None:
    """The tiny model's text model is 128 wide; an adapter made for a 64-wide one used to load
    everything and then stop on vLLM's tensor size mismatch."""
    folder = _with_weights(adapter_dir(tmp_path, "star"), width)
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--model", "tiny", "--lora", f"star={folder}", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if fits:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and "made for a text model 64 wide, but --model tiny is 128 wide" in result.stderr
