"""A stand-in for `vae-oid.npz`: the real array names and shapes, random weights.

The layout is written out here independently of `tools.vae_decoder`, so that tests catch a
decoder that expects the wrong names or shapes. Decoder arrays follow big_vision's
`_get_params`; encoder arrays follow big_vision's `encode_to_codebook_indices` (four 4x4
stride-2 convs 1->16->32->64->128, two residual blocks, a 1x1 conv 128->512), and the
codebook comes with the EMA statistics of the PyTorch VQ-VAE it was trained with
(`_vq_vae._ema_w`, `_vq_vae._ema_cluster_size`). Saved uncompressed with `np.savez` in float32
this layout is 8,479,556 bytes, exactly the size of the published file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def vae_layout() -> dict[str, tuple[int, ...]]:
    """Every array of vae-oid.npz with its shape, decoder and encoder."""
    layout: dict[str, tuple[int, ...]] = {
        "_vq_vae._embedding": (128, 512),
        "_vq_vae._ema_w": (128, 512),
        "_vq_vae._ema_cluster_size": (128,),
    }

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        layout[f"{name}.weight"] = (c_out, c_in, k, k)
        layout[f"{name}.bias"] = (c_out,)

    def resblock(name: str) -> None:
        conv(f"{name}.net.0", 128, 128, 3)
        conv(f"{name}.net.2", 128, 128, 3)
        conv(f"{name}.net.4", 128, 128, 1)

    for index, (c_in, c_out) in zip((0, 2, 4, 6), ((1, 16), (16, 32), (32, 64), (64, 128)), strict=True):
        conv(f"encoder.{index}", c_out, c_in, 4)
    resblock("encoder.8")
    resblock("encoder.9")
    conv("encoder.10", 512, 128, 1)

    conv("decoder.0", 128, 512, 1)
    resblock("decoder.2")
    resblock("decoder.3")
    for index, (c_in, c_out) in zip((4, 6, 8, 10), ((128, 128), (128, 64), (64, 32), (32, 16)), strict=True):
        # Transposed convolutions are stored (in, out, kh, kw).
        layout[f"decoder.{index}.weight"] = (c_in, c_out, 4, 4)
        layout[f"decoder.{index}.bias"] = (c_out,)
    conv("decoder.12", 1, 16, 1)
    return layout


def random_vae_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays of the vae-oid.npz layout, scaled so activations stay of order one."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, shape in vae_layout().items():
        if name.startswith("_vq_vae."):
            values = rng.standard_normal(shape)
        elif name.endswith(".bias"):
            values = 0.05 * rng.standard_normal(shape)
        elif len(shape) == 4 and name.startswith("decoder.") and name.split(".")[1] in {"4", "6", "8", "10"}:
            # He init; a stride-2, 4x4 transposed conv feeds each output from 2x2 taps per input channel.
            values = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * 4))
        else:
            values = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        arrays[name] = values.astype(np.float32)
    return arrays


def write_random_vae_npz(path: str | Path, seed: int = 0) -> Path:
    """Write an uncompressed .npz with exactly vae-oid.npz's array names and shapes and random weights."""
    path = Path(path)
    with path.open("wb") as f:
        np.savez(f, allow_pickle=False, **random_vae_arrays(seed))
    return path
