"""Time the numpy VQ-VAE mask decoder against PyTorch, and pasting + outlining, per mask.

Run from the repository root: `.venv/bin/python -m benchmarks.mask_decode`. It uses random
weights of the real vae-oid.npz layout (tests/vae_fixture.py), so no download is needed;
speed does not depend on the weights' values. Times are medians of repeats after a warmup.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.torch_vae import torch_decoder
from tests.vae_fixture import random_vae_arrays, write_random_vae_npz
from tools.masks import mask_outline, paste_mask
from tools.vae_decoder import VaeDecoder


def median_seconds(function: Callable[[], object], *, warmup_s: float = 0.5, repeats: int = 30) -> float:
    """Median wall time of one call, after warming up for at least 5 calls and warmup_s seconds."""
    # PyTorch's first calls for a new input shape are much slower (kernel selection), so warm up by time.
    start = time.perf_counter()
    calls = 0
    while calls < 5 or time.perf_counter() - start < warmup_s:
        function()
        calls += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def smooth_mask64() -> np.ndarray:
    """A mask like the real decoder's: smooth values in [-1, 1], an ellipse with a notch."""
    ys, xs = np.mgrid[:64, :64] + 0.5
    ellipse = 1.0 - ((xs - 30) / 26) ** 2 - ((ys - 34) / 20) ** 2
    notch = np.exp(-(((xs - 50) / 6) ** 2) - ((ys - 34) / 5) ** 2)
    mask: np.ndarray = np.tanh(3 * (ellipse - notch)).astype(np.float32)
    return mask


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        numpy_decoder = VaeDecoder.from_npz(write_random_vae_npz(Path(tmp) / "vae-oid.npz"))
    reference = torch_decoder(random_vae_arrays(0))

    print("Mask decoding, ms per mask (median):")
    print(f"{'batch':>5}  {'numpy':>8}  {'torch':>8}  {'numpy/torch':>11}")
    for batch in (1, 16):
        codes = rng.integers(0, 128, size=(batch, 16))
        t_numpy = median_seconds(lambda: numpy_decoder.decode(codes)) / batch  # noqa: B023
        t_torch = median_seconds(lambda: reference(codes)) / batch  # noqa: B023
        print(f"{batch:>5}  {t_numpy * 1e3:>8.3f}  {t_torch * 1e3:>8.3f}  {t_numpy / t_torch:>11.2f}")

    print()
    print("Paste + outline, ms per mask (median):")
    print(f"{'mask':<22}  {'image':>9}  {'box':>9}  {'paste':>7}  {'outline':>7}  {'total':>7}  {'parts':>5}")
    decoded = numpy_decoder.decode(rng.integers(0, 128, size=(1, 16)))[0]
    cases = [
        ("smooth (real-like)", smooth_mask64(), (640, 480), (100.4, 80.9, 420.2, 330.7)),
        ("smooth (real-like)", smooth_mask64(), (1920, 1080), (300.0, 100.0, 1500.0, 1000.0)),
        ("random-weight decode", decoded, (640, 480), (100.4, 80.9, 420.2, 330.7)),
    ]
    for name, mask64, (width, height), box in cases:
        t_paste = median_seconds(lambda: paste_mask(mask64, box, width=width, height=height))  # noqa: B023
        pasted = paste_mask(mask64, box, width=width, height=height)
        t_outline = median_seconds(lambda: mask_outline(pasted), repeats=15)  # noqa: B023
        parts = len(getattr(mask_outline(pasted), "geoms", [None]))
        box_wh = f"{int(box[2]) - int(box[0])}x{int(box[3]) - int(box[1])}"
        print(
            f"{name:<22}  {width:>4}x{height:<4}  {box_wh:>9}  {t_paste * 1e3:>7.2f}  {t_outline * 1e3:>7.2f}  "
            f"{(t_paste + t_outline) * 1e3:>7.2f}  {parts:>5}"
        )


if __name__ == "__main__":
    main()
