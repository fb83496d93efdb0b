"""PaliGemma's VQ-VAE mask decoder in numpy: 16 codebook indices in, one 64x64 float mask out.

The layers follow big_vision's `Decoder` in `evaluators/proj/paligemma/transfers/segmentation.py`
and read the PyTorch-style arrays of `vae-oid.npz` as they are stored. Activations are kept
channels-last so that every convolution is one BLAS matrix product over the whole batch.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tools.errors import CheckpointError, InvalidInputError

__all__ = [
    "CODEBOOK_SIZE",
    "MASK_SIZE",
    "NUM_CODES",
    "VAE_OID_SHA256",
    "VAE_OID_SIZE",
    "VAE_OID_URL",
    "VaeDecoder",
]

VAE_OID_SHA256: Final = "5586010257b8536dddefab65e7755077f21d5672d5674dacf911f73ae95a4447"
VAE_OID_SIZE: Final = 8479556
# The public HTTPS form of gs://big_vision/paligemma/vae-oid.npz.
VAE_OID_URL: Final = "https://storage.googleapis.com/big_vision/paligemma/vae-oid.npz"

NUM_CODES: Final = 16
CODEBOOK_SIZE: Final = 128
MASK_SIZE: Final = 64

_EMBEDDING_DIM: Final = 512
_DIM: Final = 128
_RESBLOCKS: Final = ("decoder.2.net", "decoder.3.net")
# (name, input channels, output channels) of the four stride-2 transposed convolutions.
_UPSAMPLERS: Final = (
    ("decoder.4", 128, 128),
    ("decoder.6", 128, 64),
    ("decoder.8", 64, 32),
    ("decoder.10", 32, 16),
)

Float32Array = NDArray[np.float32]


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every array the decoder reads, with its PyTorch-layout shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "_vq_vae._embedding": (CODEBOOK_SIZE, _EMBEDDING_DIM),
        "decoder.0.weight": (_DIM, _EMBEDDING_DIM, 1, 1),
        "decoder.0.bias": (_DIM,),
    }
    for block in _RESBLOCKS:
        for layer, kernel in ((0, 3), (2, 3), (4, 1)):
            shapes[f"{block}.{layer}.weight"] = (_DIM, _DIM, kernel, kernel)
            shapes[f"{block}.{layer}.bias"] = (_DIM,)
    for name, c_in, c_out in _UPSAMPLERS:
        shapes[f"{name}.weight"] = (c_in, c_out, 4, 4)  # transposed conv: (in, out, kh, kw)
        shapes[f"{name}.bias"] = (c_out,)
    shapes["decoder.12.weight"] = (1, 16, 1, 1)
    shapes["decoder.12.bias"] = (1,)
    return shapes


_EXPECTED_SHAPES: Final = _expected_shapes()

_NOT_VAE_OID = (
    "this is probably not PaliGemma's vae-oid.npz "
    f"(expected {VAE_OID_SIZE:,} bytes, sha256 {VAE_OID_SHA256}, from {VAE_OID_URL})"
)


def _conv_matrix(weight: Float32Array) -> Float32Array:
    """A conv weight (out, in, kh, kw) as the (kh*kw*in, out) matrix that multiplies channels-last patches."""
    c_out, c_in, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(kh * kw * c_in, c_out))


def _conv_transpose_matrix(weight: Float32Array) -> Float32Array:
    """A transposed-conv weight (in, out, 4, 4) as the (in, 16*out) matrix giving every tap at once.

    Columns are ordered (dy, dx, ry, rx, out) for kernel row 2*dy + ry and column 2*dx + rx: the
    four taps with the same (dy, dx) land on one 2x2 block of output pixels, so they are added together.
    """
    c_in, c_out, kh, kw = weight.shape
    blocks = weight.reshape(c_in, c_out, 2, 2, 2, 2)  # (in, out, dy, ry, dx, rx)
    return np.ascontiguousarray(blocks.transpose(0, 2, 4, 3, 5, 1).reshape(c_in, kh * kw * c_out))


def _conv3x3(x: Float32Array, matrix: Float32Array, bias: Float32Array) -> Float32Array:
    """3x3 convolution, stride 1, zero padding 1, on channels-last x (N, H, W, C)."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), np.float32)
    padded[:, 1:-1, 1:-1] = x
    # im2col: the nine shifted windows side by side, in the (kh, kw, in) order of `matrix`.
    patches = np.empty((n, h, w, 9, c), np.float32)
    for dy in range(3):
        for dx in range(3):
            patches[:, :, :, 3 * dy + dx] = padded[:, dy : dy + h, dx : dx + w]
    out = patches.reshape(n * h * w, 9 * c) @ matrix
    out += bias
    return out.reshape(n, h, w, -1)


def _conv1x1(x: Float32Array, matrix: Float32Array, bias: Float32Array) -> Float32Array:
    """1x1 convolution on channels-last x (N, H, W, C)."""
    n, h, w, c = x.shape
    out = x.reshape(n * h * w, c) @ matrix
    out += bias
    return out.reshape(n, h, w, -1)


def _conv_transpose_4x4_s2_p1(x: Float32Array, matrix: Float32Array, bias: Float32Array) -> Float32Array:
    """PyTorch `conv_transpose2d(kernel 4, stride 2, padding 1)` on channels-last x: (N, H, W, C) -> (N, 2H, 2W, C')."""
    n, h, w, c = x.shape
    c_out = matrix.shape[1] // 16
    taps = (x.reshape(n * h * w, c) @ matrix).reshape(n, h, w, 2, 2, 2, 2, c_out)
    # col2im: input pixel (i, j) adds tap (2*dy + ry, 2*dx + rx) to pixel (2*(i + dy) + ry, 2*(j + dx) + rx)
    # of the unpadded (2H + 2, 2W + 2) output. Viewing that output as (N, H + 1, 2, W + 1, 2, C') makes
    # each (dy, dx) one shifted block add, with the contiguous (rx, C') rows of both arrays as inner loop.
    full = np.zeros((n, h + 1, 2, w + 1, 2, c_out), np.float32)
    for dy in range(2):
        for dx in range(2):
            full[:, dy : dy + h, :, dx : dx + w] += taps[:, :, :, dy, dx].transpose(0, 1, 3, 2, 4, 5)
    # PyTorch's padding 1 drops one row and column on each side.
    out = full.reshape(n, 2 * h + 2, 2 * w + 2, c_out)[:, 1:-1, 1:-1]
    out += bias
    return out


def _relu_(x: Float32Array) -> Float32Array:
    """ReLU in place; returns x."""
    np.maximum(x, 0.0, out=x)
    return x


class VaeDecoder:
    """The mask decoder of `vae-oid.npz` with float32 numpy weights, ready to decode batches of codes."""

    def __init__(self, arrays: Mapping[str, ArrayLike]) -> None:
        """Take the decoder's arrays (PyTorch names and layouts); raise CheckpointError if any is missing or wrong."""
        missing = [name for name in _EXPECTED_SHAPES if name not in arrays]
        if missing:
            raise CheckpointError(
                f"the VQ-VAE checkpoint lacks {len(missing)} decoder array(s): {', '.join(missing)}; {_NOT_VAE_OID}"
            )
        weights: dict[str, Float32Array] = {}
        for name, shape in _EXPECTED_SHAPES.items():
            array = np.asarray(arrays[name])
            if array.shape != shape:
                raise CheckpointError(
                    f"the VQ-VAE checkpoint array {name} has shape {array.shape}, expected {shape}; {_NOT_VAE_OID}"
                )
            if array.dtype.kind != "f":
                raise CheckpointError(
                    f"the VQ-VAE checkpoint array {name} has dtype {array.dtype}, expected floats; {_NOT_VAE_OID}"
                )
            if not np.all(np.isfinite(array)):
                raise CheckpointError(
                    f"the VQ-VAE checkpoint array {name} holds NaN or infinite values; {_NOT_VAE_OID}"
                )
            weights[name] = array.astype(np.float32)

        self._embedding: Float32Array = np.ascontiguousarray(weights["_vq_vae._embedding"])
        self._in_matrix = _conv_matrix(weights["decoder.0.weight"])
        self._in_bias = weights["decoder.0.bias"]
        self._resblocks: list[tuple[Float32Array, ...]] = []
        for block in _RESBLOCKS:
            self._resblocks.append(
                (
                    _conv_matrix(weights[f"{block}.0.weight"]),
                    weights[f"{block}.0.bias"],
                    _conv_matrix(weights[f"{block}.2.weight"]),
                    weights[f"{block}.2.bias"],
                    _conv_matrix(weights[f"{block}.4.weight"]),
                    weights[f"{block}.4.bias"],
                )
            )
        self._upsamplers: list[tuple[Float32Array, Float32Array]] = [
            (_conv_transpose_matrix(weights[f"{name}.weight"]), weights[f"{name}.bias"]) for name, _, _ in _UPSAMPLERS
        ]
        self._out_matrix = _conv_matrix(weights["decoder.12.weight"])
        self._out_bias = weights["decoder.12.bias"]

    @classmethod
    def from_npz(cls, path: str | Path) -> VaeDecoder:
        """Load the decoder from a `vae-oid.npz` file; raise CheckpointError if it is unreadable or not that layout."""
        path = Path(path)
        # We open the file ourselves: np.load leaks its own handle when the zip turns out damaged.
        try:
            with path.open("rb") as f:
                loaded = np.load(f, allow_pickle=False)
                if not isinstance(loaded, np.lib.npyio.NpzFile):
                    raise CheckpointError(f"{path} holds a single array, not an .npz archive; {_NOT_VAE_OID}")
                with loaded:
                    arrays = {name: loaded[name] for name in loaded.files if name in _EXPECTED_SHAPES}
        except OSError as exc:
            raise CheckpointError(
                f"cannot open the VQ-VAE checkpoint {path}: {exc}; "
                f"it should be PaliGemma's vae-oid.npz, from {VAE_OID_URL}"
            ) from exc
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CheckpointError(
                f"the VQ-VAE checkpoint {path} is damaged or not an .npz: {exc}; {_NOT_VAE_OID}"
            ) from exc
        return cls(arrays)

    def decode(self, codes: ArrayLike) -> Float32Array:
        """Decode integer codes (N, 16), each 0..127, into float32 masks (N, 64, 64), positive inside the object."""
        indices = _check_codes(codes)
        n = indices.shape[0]
        if n == 0:
            return np.zeros((0, MASK_SIZE, MASK_SIZE), np.float32)
        # Code i lands at row i // 4, column i % 4: a row-major 4x4 grid.
        x = self._embedding[indices.reshape(-1)].reshape(n, 4, 4, _EMBEDDING_DIM)
        x = _relu_(_conv1x1(x, self._in_matrix, self._in_bias))
        for matrix0, bias0, matrix2, bias2, matrix4, bias4 in self._resblocks:
            h = _relu_(_conv3x3(x, matrix0, bias0))
            h = _relu_(_conv3x3(h, matrix2, bias2))
            h = _conv1x1(h, matrix4, bias4)
            h += x  # no ReLU after the residual add
            x = h
        for matrix, bias in self._upsamplers:
            x = _relu_(_conv_transpose_4x4_s2_p1(x, matrix, bias))
        out = _conv1x1(x, self._out_matrix, self._out_bias)
        return np.ascontiguousarray(out[..., 0])


def _check_codes(codes: ArrayLike) -> NDArray[np.intp]:
    """The codes as an index array (N, 16); raise InvalidInputError unless they are integers in 0..127."""
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise InvalidInputError(f"mask codes must be integers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != NUM_CODES:
        raise InvalidInputError(f"mask codes must have shape (N, {NUM_CODES}), got {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= CODEBOOK_SIZE):
        raise InvalidInputError(
            f"mask codes must be in 0..{CODEBOOK_SIZE - 1}, got values from {array.min()} to {array.max()}"
        )
    return array.astype(np.intp)
