"""The numpy VQ-VAE mask decoder against an independent PyTorch version of big_vision's layers."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.torch_vae import torch_decoder
from tests.vae_fixture import random_vae_arrays, vae_layout, write_random_vae_npz
from tools.errors import CheckpointError, InvalidInputError
from tools.vae_decoder import VAE_OID_SIZE, VaeDecoder


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz", seed=0)


@pytest.fixture(scope="module")
def decoder(npz_path: Path) -> VaeDecoder:
    return VaeDecoder.from_npz(npz_path)


def test_fixture_has_the_published_file_size(npz_path: Path) -> None:
    # The layout the fixture writes, saved as np.savez does, comes to exactly vae-oid.npz's size.
    assert npz_path.stat().st_size == VAE_OID_SIZE


@pytest.mark.parametrize(
    ("batch", "seed"),
    [
        pytest.param(1, 1, id="batch-1"),
        pytest.param(16, 2, id="batch-16"),
        pytest.param(3, 3, id="batch-3-odd"),
        # The largest layers take the masks a few at a time: a full group and a partial one.
        pytest.param(5, 5, id="batch-5-groups"),
    ],
)
def test_decode_matches_torch(decoder: VaeDecoder, batch: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 128, size=(batch, 16))
    expected = torch_decoder(random_vae_arrays(0))(codes)
    got = decoder.decode(codes)
    assert got.shape == (batch, 64, 64)
    assert got.dtype == np.float32
    # Random weights give outputs of both signs and order one, so the comparison means something.
    assert (expected > 0).any() and (expected < 0).any() and np.abs(expected).max() > 1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_decode_batch_rows_are_independent(decoder: VaeDecoder) -> None:
    codes = np.random.default_rng(4).integers(0, 128, size=(5, 16))
    batched = decoder.decode(codes)
    one_by_one = np.stack([decoder.decode(codes[i : i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-5)


def test_decode_accepts_lists_and_empty_batches(decoder: VaeDecoder) -> None:
    codes = [list(range(16))]
    np.testing.assert_array_equal(decoder.decode(codes), decoder.decode(np.arange(16)[None]))
    assert decoder.decode(np.zeros((0, 16), np.int32)).shape == (0, 64, 64)


def test_encoder_arrays_are_not_needed() -> None:
    arrays = {k: v for k, v in random_vae_arrays(0).items() if not k.startswith("encoder.")}
    codes = np.arange(16)[None]
    np.testing.assert_allclose(VaeDecoder(arrays).decode(codes), torch_decoder(arrays)(codes), atol=1e-4)


@pytest.mark.parametrize(
    "codes",
    [
        pytest.param(np.zeros((1, 16), np.float32), id="float-dtype"),
        pytest.param(np.zeros((1, 16), np.bool_), id="bool-dtype"),
        pytest.param(np.zeros(16, np.int64), id="one-dimensional"),
        pytest.param(np.zeros((2, 15), np.int64), id="fifteen-codes"),
        pytest.param(np.zeros((1, 4, 4), np.int64), id="grid-shape"),
        pytest.param(np.full((1, 16), 128), id="value-128"),
        pytest.param(np.full((1, 16), -1), id="negative-value"),
        pytest.param([["<seg001>"] * 16], id="strings"),
    ],
)
def test_bad_codes_raise(decoder: VaeDecoder, codes: object) -> None:
    with pytest.raises(InvalidInputError):
        decoder.decode(codes)  # type: ignore[arg-type]
    assert issubclass(InvalidInputError, ValueError)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as f:
        np.savez(f, allow_pickle=True, **arrays)  # one case stores an object array on purpose
    return path


def _without(name: str) -> dict[str, np.ndarray]:
    arrays = random_vae_arrays(0)
    del arrays[name]
    return arrays


def _replaced(name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    arrays = random_vae_arrays(0)
    arrays[name] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        pytest.param(_without("decoder.8.weight"), "decoder.8.weight", id="missing-transposed-conv"),
        pytest.param(_without("_vq_vae._embedding"), "_vq_vae._embedding", id="missing-codebook"),
        pytest.param(
            _replaced("decoder.4.weight", np.zeros((128, 128, 3, 3), np.float32)),
            r"\(128, 128, 4, 4\)",
            id="bad-kernel",
        ),
        pytest.param(
            _replaced("_vq_vae._embedding", np.zeros((512, 128), np.float32)),
            "_vq_vae._embedding",
            id="codebook-transposed",
        ),
        pytest.param(_replaced("decoder.0.bias", np.zeros(128, np.int32)), "dtype", id="integer-weights"),
        pytest.param(_replaced("decoder.12.bias", np.array([np.nan], np.float32)), "NaN", id="nan-weight"),
        pytest.param({"weights": np.zeros(3, np.float32)}, "lacks 25", id="unrelated-npz"),
    ],
)
def test_wrong_layout_raises_checkpoint_error(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = _write_npz(tmp_path / "vae.npz", arrays)
    with pytest.raises(CheckpointError, match=message) as info:
        VaeDecoder.from_npz(path)
    assert "probably not PaliGemma's vae-oid.npz" in str(info.value)


def _text_file(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>\n")
    return path


def _npy_file(path: Path) -> Path:
    np.save(path, np.zeros((128, 512), np.float32))
    return path


def _truncated_npz(path: Path) -> Path:
    write_random_vae_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickled_member(path: Path) -> Path:
    arrays: dict[str, np.ndarray] = dict(random_vae_arrays(0))
    arrays["decoder.0.bias"] = np.array([{"not": "floats"}] * 128, dtype=object)
    return _write_npz(path, arrays)


def _corrupt_member(path: Path) -> Path:
    # A valid zip whose member is not an .npy array at all.
    with zipfile.ZipFile(path, "w") as zf:
        for name in vae_layout():
            zf.writestr(f"{name}.npy", b"garbage")
    return path


def _missing(path: Path) -> Path:
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_text_file, id="text-file"),
        pytest.param(_npy_file, id="single-npy-array"),
        pytest.param(_truncated_npz, id="truncated-download"),
        pytest.param(_pickled_member, id="pickled-object-array"),
        pytest.param(_corrupt_member, id="zip-of-garbage"),
        pytest.param(_missing, id="missing-file"),
        pytest.param(_directory, id="directory"),
    ],
)
def test_unreadable_file_raises_checkpoint_error(tmp_path: Path, make: object) -> None:
    path = make(tmp_path / "checkpoint.bin")  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=r"vae-oid\.npz"):
        VaeDecoder.from_npz(path)
