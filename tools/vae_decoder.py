"""PaliGemma's VQ-VAE mask decoder in numpy: 16 codebook indices in, one 64x64 float mask out.

The layers follow big_vision's `Decoder` in `evaluators/proj/paligemma/transfers/segmentation.py`
and read the PyTorch-style arrays of `vae-oid.npz` as they are stored. Activations are kept
channels-last, and every convolution is a BLAS matrix product shaped for it:

- the first 1x1 convolution and the first 3x3 convolution see only codes, so they are tables
  over the 128 codes, computed when the weights are loaded;
- the other 3x3 convolutions (4x4 pixels) multiply the nine neighbours side by side (im2col);
- the 4x4 stride-2 transposed convolutions to 8x8 and 16x16 multiply every input pixel by all
  16 kernel taps at once and add the taps into place (col2im), which wastes no multiplications;
- the two largest (to 32x32 and 64x64) instead multiply each 2x2 window of the input by the
  matrix that gives all four output pixels it determines, which leaves nothing to add into
  place (the outer ring of windows is the only waste); the last 1x1 convolution runs on those
  windows' outputs, before the pixels are put in order;
- from the 16x16 layer on, masks go through a few at a time, so that the buffers stay in cache.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import as_strided
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

# Masks per pass through the layers from 16x16 on: each step's buffers (at most 3 MB) then stay in cache.
_CHUNK: Final = 4

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


def _taps_matrix(weight: Float32Array) -> Float32Array:
    """A transposed-conv weight (in, out, 4, 4) as the (in, 16*out) matrix giving every tap at once.

    Columns are ordered (dy, dx, ry, rx, out) for kernel row 2*dy + ry and column 2*dx + rx: the
    four taps with the same (dy, dx) land on one 2x2 block of output pixels, so they are added together.
    """
    c_in, c_out, kh, kw = weight.shape
    blocks = weight.reshape(c_in, c_out, 2, 2, 2, 2)  # (in, out, dy, ry, dx, rx)
    return np.ascontiguousarray(blocks.transpose(0, 2, 4, 3, 5, 1).reshape(c_in, kh * kw * c_out))


def _windows_matrix(weight: Float32Array) -> Float32Array:
    """A transposed-conv weight (in, out, 4, 4) as the (4*in, 4*out) matrix from a 2x2 input window to its outputs.

    Rows are ordered (a, b, in) for window row a and column b, columns (ry, rx, out): the window
    whose top-left pixel is (i, j) of the zero-bordered input gives output pixel (2i + ry, 2j + rx)
    of the uncropped (2H + 2, 2W + 2) output, through kernel row 2*(1 - a) + ry and column 2*(1 - b) + rx.
    """
    c_in, c_out, _, _ = weight.shape
    flipped = weight.reshape(c_in, c_out, 2, 2, 2, 2)[:, :, ::-1, :, ::-1, :]  # (in, out, a, ry, b, rx)
    return np.ascontiguousarray(flipped.transpose(2, 4, 0, 3, 5, 1).reshape(4 * c_in, 4 * c_out))


def _first_conv_table(features: Float32Array, weight: Float32Array) -> Float32Array:
    """Row tap*128 + code: a code's features times one tap of a 3x3 weight (out, in, 3, 3); last, a row of zeros."""
    c_out, c_in = weight.shape[:2]
    per_tap = features @ weight.transpose(2, 3, 1, 0).reshape(9, c_in, c_out)  # (tap, code, out)
    return np.concatenate((per_tap.reshape(-1, c_out), np.zeros((1, c_out), np.float32)))


def _first_conv_neighbours() -> NDArray[np.intp]:
    """(16, 9): for each pixel of the 4x4 code grid and each 3x3 tap, the code under the tap, or -1 off the grid."""
    neighbours = np.full((16, 9), -1, dtype=np.intp)
    for pixel in range(16):
        for tap in range(9):
            row, col = pixel // 4 + tap // 3 - 1, pixel % 4 + tap % 3 - 1
            if 0 <= row < 4 and 0 <= col < 4:
                neighbours[pixel, tap] = 4 * row + col
    return neighbours


_NEIGHBOURS: Final = _first_conv_neighbours()


def _conv3x3(bordered: Float32Array, matrix: Float32Array, bias: Float32Array) -> Float32Array:
    """3x3 convolution, stride 1, of a zero-bordered channels-last x (N, H+2, W+2, C): (N, H, W, C')."""
    n, h, w, c = bordered.shape[0], bordered.shape[1] - 2, bordered.shape[2] - 2, bordered.shape[3]
    # im2col: the nine shifted windows side by side, in the (kh, kw, in) order of `matrix`.
    s_n, s_h, s_w, s_c = bordered.strides
    windows = as_strided(bordered, (n, h, w, 3, 3, c), (s_n, s_h, s_w, s_h, s_w, s_c), writeable=False)
    out = windows.reshape(n * h * w, 9 * c) @ matrix
    out += bias
    return out.reshape(n, h, w, -1)


def _conv1x1(x: Float32Array, matrix: Float32Array, bias: Float32Array) -> Float32Array:
    """1x1 convolution on channels-last x (N, H, W, C)."""
    n, h, w, c = x.shape
    out = x.reshape(n * h * w, c) @ matrix
    out += bias
    return out.reshape(n, h, w, -1)


def _conv_transpose_taps(x: Float32Array, matrix: Float32Array, row_bias: Float32Array) -> Float32Array:
    """ReLU of `conv_transpose2d(kernel 4, stride 2, padding 1)` of x (N, H, W, C): (N, 2H+2, 2W+2, C'), zero ring."""
    n, h, w, c = x.shape
    c_out = matrix.shape[1] // 16
    taps = (x.reshape(n * h * w, c) @ matrix).reshape(n, h, w, 2, 2, 2, 2, c_out)
    # col2im: input pixel (i, j) adds tap (2*dy + ry, 2*dx + rx) to pixel (2*(i + dy) + ry, 2*(j + dx) + rx)
    # of the uncropped (2H + 2, 2W + 2) output. Viewing that output as (N, H + 1, 2, W + 1, 2, C') makes
    # each (dy, dx) one shifted block add, with the contiguous (rx, C') rows of both arrays as inner loop.
    full = np.zeros((n, h + 1, 2, w + 1, 2, c_out), np.float32)
    for dy in range(2):
        for dx in range(2):
            full[:, dy : dy + h, :, dx : dx + w] += taps[:, :, :, dy, dx].transpose(0, 1, 3, 2, 4, 5)
    return _bias_relu_border(full.reshape(n, 2 * h + 2, 2 * w + 2, c_out), row_bias)


def _conv_transpose_windows(bordered: Float32Array, matrix: Float32Array, block_bias: Float32Array) -> Float32Array:
    """ReLU of the same transposed conv from a zero-bordered x (N, H+2, W+2, C), uncropped: (N, H+1, W+1, 2, 2, C')."""
    n, h1, w1, c = bordered.shape[0], bordered.shape[1] - 1, bordered.shape[2] - 1, bordered.shape[3]
    # A window's two rows are each 2*C contiguous numbers of one bordered row (so the rows must be contiguous).
    bordered = np.ascontiguousarray(bordered)
    s_n, s_h, s_w, s_c = bordered.strides
    windows = as_strided(bordered, (n, h1, w1, 2, 2 * c), (s_n, s_h, s_w, s_h, s_c), writeable=False)
    out = windows.reshape(n * h1 * w1, 4 * c) @ matrix
    out += block_bias
    return _relu_(out).reshape(n, h1, w1, 2, 2, -1)


def _interleave_bordered(blocks: Float32Array) -> Float32Array:
    """Output blocks (N, H+1, W+1, 2, 2, C) as pixels (N, 2H+2, 2W+2, C), the cropped-off ring set to zero."""
    n, h1, w1, _, _, c = blocks.shape
    out = np.empty((n, h1, 2, w1, 2, c), np.float32)
    np.copyto(out, blocks.transpose(0, 1, 3, 2, 4, 5))
    return _zero_border_(out.reshape(n, 2 * h1, 2 * w1, c))


def _bias_relu_border(full: Float32Array, row_bias: Float32Array) -> Float32Array:
    """ReLU(full + bias) in place on (N, H, W, C), then its outer ring zeroed: the next layer's zero-bordered input.

    `row_bias` is the bias repeated W times: added a whole row at a time, since broadcasting C
    numbers makes a slow inner loop.
    """
    n, h, w, c = full.shape
    rows = full.reshape(n * h, w * c)
    rows += row_bias
    _relu_(rows)
    return _zero_border_(full)


def _zero_border_(x: Float32Array) -> Float32Array:
    """Zero the outer ring of pixels of x (N, H, W, C) in place; returns x."""
    x[:, 0] = 0.0
    x[:, -1] = 0.0
    x[:, :, 0] = 0.0
    x[:, :, -1] = 0.0
    return x


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

        # decoder.0 (1x1 conv, ReLU) sees one code per pixel, and the first 3x3 conv sees only those
        # features: both become tables over the codes.
        self._code_features = _relu_(
            _conv1x1(
                weights["_vq_vae._embedding"][:, None, None],
                _conv_matrix(weights["decoder.0.weight"]),
                weights["decoder.0.bias"],
            )
        ).reshape(CODEBOOK_SIZE, _DIM)
        self._first_conv = _first_conv_table(self._code_features, weights[f"{_RESBLOCKS[0]}.0.weight"])
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
        # The two smaller upsamplers with the bias for a whole output row (4x4 -> 10 bordered columns,
        # 8x8 -> 18), the two larger with the bias for one 2x2 output block.
        (small, _, _), (medium, _, _), (large, _, _), (largest, _, _) = _UPSAMPLERS
        self._taps_upsamplers = [
            (_taps_matrix(weights[f"{name}.weight"]), np.tile(weights[f"{name}.bias"], width))
            for name, width in ((small, 10), (medium, 18))
        ]
        self._windows_upsamplers = [
            (_windows_matrix(weights[f"{name}.weight"]), np.tile(weights[f"{name}.bias"], 4))
            for name in (large, largest)
        ]
        self._out_vector = np.ascontiguousarray(weights["decoder.12.weight"].reshape(-1))
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
        x = self._code_features[indices].reshape(n, 4, 4, _DIM)
        # The first 3x3 conv: for each pixel, the table rows of the codes under its nine taps, summed.
        table_rows = np.where(
            _NEIGHBOURS >= 0, np.arange(9) * CODEBOOK_SIZE + indices[:, _NEIGHBOURS], 9 * CODEBOOK_SIZE
        )
        h = self._first_conv[table_rows.transpose(2, 0, 1)].sum(axis=0).reshape(n, 4, 4, _DIM)
        bordered = np.zeros((n, 6, 6, _DIM), np.float32)
        for block, (matrix0, bias0, matrix2, bias2, matrix4, bias4) in enumerate(self._resblocks):
            if block:
                bordered[:, 1:-1, 1:-1] = x
                h = _conv3x3(bordered, matrix0, bias0)
            else:  # the first block's first conv came from the table
                h += bias0
            bordered[:, 1:-1, 1:-1] = _relu_(h)
            h = _relu_(_conv3x3(bordered, matrix2, bias2))
            x = _conv1x1(h, matrix4, bias4) + x  # no ReLU after the residual add
        (small, small_bias), (medium, medium_bias) = self._taps_upsamplers
        x = np.ascontiguousarray(_conv_transpose_taps(x, small, small_bias)[:, 1:-1, 1:-1])
        (large, large_bias), (largest, largest_bias) = self._windows_upsamplers
        out = np.empty((n, MASK_SIZE, MASK_SIZE), np.float32)
        for start in range(0, n, _CHUNK):
            part = slice(start, start + _CHUNK)
            y = _conv_transpose_taps(x[part], medium, medium_bias)
            y = _interleave_bordered(_conv_transpose_windows(y, large, large_bias))
            y = _conv_transpose_windows(y, largest, largest_bias)
            # decoder.12 (1x1 conv to one channel) per output pixel, then the pixels in order, cropped.
            k, h1, w1 = y.shape[:3]
            mask = (y.reshape(-1, y.shape[-1]) @ self._out_vector).reshape(k, h1, w1, 2, 2)
            out[part] = mask.transpose(0, 1, 3, 2, 4).reshape(k, 2 * h1, 2 * w1)[:, 1:-1, 1:-1]
        out += self._out_bias
        return out


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
