"""The shipped tiny VQ-VAE has PaliGemma's decoder layout and decodes the shapes' masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.torch_vae import torch_decoder
from tools.tiny_shapes_model import TINY_SHAPES_MODEL, TINY_SHAPES_VAE_PATH
from tools.vae_checkpoint import load_vae_decoder, locate_vae_checkpoint
from tools.vae_decoder import _EXPECTED_SHAPES
from training import vae
from training.scenes import SHAPES
from training.train_tiny import shape_codes


def test_the_decoder_arrays_are_those_of_vae_oid() -> None:
    with np.load(TINY_SHAPES_VAE_PATH) as arrays:
        decoder_arrays = {k: arrays[k].shape for k in arrays.files if not k.startswith("encoder.")}
        assert decoder_arrays == _EXPECTED_SHAPES
        assert all(arrays[k].dtype == np.float32 for k in arrays.files)
        assert sum(arrays[k].size for k in decoder_arrays) == 1_188_993  # vae-oid.npz's decoder, exactly


def test_it_is_found_for_the_tiny_model_with_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PALIGEMMA_VAE_PATH", raising=False)
    assert locate_vae_checkpoint(model=TINY_SHAPES_MODEL, download=False) == TINY_SHAPES_VAE_PATH
    assert locate_vae_checkpoint(model=f"/srv/models/{TINY_SHAPES_MODEL}/", download=False) == TINY_SHAPES_VAE_PATH


def test_an_explicit_checkpoint_still_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "vae-oid.npz"
    other.write_bytes(TINY_SHAPES_VAE_PATH.read_bytes())
    monkeypatch.setenv("PALIGEMMA_VAE_PATH", str(other))
    assert locate_vae_checkpoint(model=TINY_SHAPES_MODEL, download=False) == other


@pytest.mark.parametrize("shape", SHAPES)
def test_the_training_codes_decode_to_the_shape(shape: str) -> None:
    codes = shape_codes(TINY_SHAPES_VAE_PATH)[shape]
    decoded = load_vae_decoder(model=TINY_SHAPES_MODEL).decode(np.array([codes]))[0]
    truth = vae.canonical_mask(shape) > 0  # type: ignore[arg-type]
    iou = ((decoded > 0) & truth).sum() / ((decoded > 0) | truth).sum()
    assert iou >= 0.95


def test_numpy_decoder_equals_torch_on_it() -> None:
    with np.load(TINY_SHAPES_VAE_PATH) as arrays:
        reference = torch_decoder({k: arrays[k] for k in arrays.files})
    codes = np.random.default_rng(0).integers(0, 128, size=(8, 16))
    ours = load_vae_decoder(model=TINY_SHAPES_MODEL).decode(codes)
    np.testing.assert_allclose(ours, reference(codes), atol=1e-4)


def test_encode_decode_round_trip_in_torch() -> None:
    model = vae.load_vae(TINY_SHAPES_VAE_PATH)
    assert vae.evaluate(model, np.random.default_rng(7), count=64)["mask_iou"] >= 0.95
