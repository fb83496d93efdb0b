"""The benchmarks measure what they say they measure: pure pieces of their set-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmarks.serving import SERVED


@pytest.mark.parametrize("name", list(SERVED))
def test_a_served_configuration_keeps_its_own_vllm_arguments(name: str) -> None:
    """`--serve-arg` adds to a configuration's vLLM arguments; it once replaced them, so that
    `prefill-8k` was measured as the default server (docs/benchmarks.md)."""
    configuration = SERVED[name]
    options = configuration.serve_options("/checkpoints/tiny", 8123, ("--seed", "1"))
    assert options.vllm_args == (*configuration.options.vllm_args, "--seed", "1")
    assert (options.model, options.port, options.eager) == ("/checkpoints/tiny", 8123, configuration.options.eager)


def test_the_token_budget_configuration_raises_the_budget() -> None:
    options = SERVED["prefill-8k"].serve_options("/checkpoints/tiny", 8123)
    assert options.vllm_args == ("--max-num-batched-tokens", "8192")


def test_a_train_tiny_folder_decodes_its_masks_with_its_own_vae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tiny_accuracy --model DIR` and `domain_corners --model DIR` decode a folder's masks with
    its own `vae.npz`, else the shipped tiny one; a `PALIGEMMA_VAE_PATH` the user set wins."""
    from benchmarks.common import use_own_vae
    from server.model_source import TINY_NAME, TINY_TRAINED_DIR
    from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH
    from tools.vae_checkpoint import ENV_VAR

    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(TINY_TRAINED_DIR / "config.json", folder)
    monkeypatch.setenv(ENV_VAR, "")  # recorded as it was before the test (use_own_vae sets it itself) ...
    monkeypatch.delenv(ENV_VAR)  # ... so that teardown puts it back as it was, not as the test left it
    assert use_own_vae(TINY_NAME) is None and ENV_VAR not in os.environ  # the shipped model: the tools know
    assert use_own_vae(str(folder)) == TINY_SHAPES_VAE_PATH == Path(os.environ[ENV_VAR])  # no vae.npz of its own
    monkeypatch.delenv(ENV_VAR)
    (folder / "vae.npz").write_bytes(b"")
    assert use_own_vae(str(folder)) == folder / "vae.npz" == Path(os.environ[ENV_VAR])
    monkeypatch.setenv(ENV_VAR, "/chosen/vae.npz")
    assert use_own_vae(str(folder)) is None and os.environ[ENV_VAR] == "/chosen/vae.npz"  # the user's choice wins
