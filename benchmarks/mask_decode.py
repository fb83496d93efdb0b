"""Time the numpy VQ-VAE mask decoder against PyTorch, and pasting + outlining, per mask.

Run from the repository root: `.venv/bin/python -m benchmarks.mask_decode`. It uses random
weights of the real vae-oid.npz layout (tests/vae_fixture.py), so no download is needed;
speed does not depend on the weights' values.

The decoder is timed twice: with one thread each (numpy's BLAS and torch, in a child process
started with the thread variables set; CPU time of that thread, which other jobs on the machine
barely change) and with each library's default threads (wall time, which they do change).
Both decoders are timed in alternation, and the speed ratio is the median of the per-round
ratios, so a change of load during the run moves both sides alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.torch_vae import torch_decoder
from tests.vae_fixture import random_vae_arrays, write_random_vae_npz
from tools.masks import mask_area, mask_outline, paste_mask
from tools.vae_decoder import VaeDecoder

DECODER_GOAL = 1.0  # issue 14: the numpy decoder at least as fast as torch at batch 16
OUTLINE_GOAL_MS = 5.0  # issue 14: outline + area of a 1200x900 mask in at most 5 ms
ROUNDS = 30  # paired rounds per decoder measurement
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def warm_up(function: Callable[[], object], *, seconds: float = 0.5) -> None:
    """Call at least 5 times and for at least `seconds`: PyTorch's first calls for a new shape are slow."""
    start = time.perf_counter()
    calls = 0
    while calls < 5 or time.perf_counter() - start < seconds:
        function()
        calls += 1


def paired_times(
    ours: Callable[[], object], reference: Callable[[], object], clock: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each, timed in alternation (the order flipped every round)."""
    warm_up(ours)
    warm_up(reference)
    t_ours: list[float] = []
    t_reference: list[float] = []
    for round_ in range(rounds):
        pair = ((ours, t_ours), (reference, t_reference))
        for function, times in pair if round_ % 2 == 0 else pair[::-1]:
            start = clock()
            function()
            times.append(clock() - start)
    return t_ours, t_reference


def decoder_rows(clock: Callable[[], float], rounds: int) -> list[dict[str, Any]]:
    """Per batch size: ms per mask of numpy and torch (medians) and the median per-round speed ratio."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        numpy_decoder = VaeDecoder.from_npz(write_random_vae_npz(Path(tmp) / "vae-oid.npz"))
    reference = torch_decoder(random_vae_arrays(0))
    rows = []
    for batch in (1, 16):
        codes = rng.integers(0, 128, size=(batch, 16))
        t_numpy, t_torch = paired_times(
            lambda: numpy_decoder.decode(codes),  # noqa: B023
            lambda: reference(codes),  # noqa: B023
            clock,
            rounds,
        )
        rows.append(
            {
                "batch": batch,
                "numpy_ms": statistics.median(t_numpy) / batch * 1e3,
                "torch_ms": statistics.median(t_torch) / batch * 1e3,
                "speed": statistics.median(r / o for o, r in zip(t_numpy, t_torch, strict=True)),
            }
        )
    return rows


def threads_note() -> str:
    import torch

    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    return f"torch threads {torch.get_num_threads()}, OPENBLAS_NUM_THREADS {blas_threads}"


def print_decoder_table(title: str, rows: list[dict[str, Any]], note: str) -> None:
    print(f"{title} ({note}), ms per mask (median):")
    print(f"{'batch':>5}  {'numpy':>8}  {'torch':>8}  {'numpy speed vs torch':>20}")
    for row in rows:
        speed = f"{row['speed']:.2f}x"
        print(f"{row['batch']:>5}  {row['numpy_ms']:>8.3f}  {row['torch_ms']:>8.3f}  {speed:>20}")


def smooth_mask64() -> np.ndarray:
    """A mask like the real decoder's: smooth values in [-1, 1], an ellipse with a notch."""
    ys, xs = np.mgrid[:64, :64] + 0.5
    ellipse = 1.0 - ((xs - 30) / 26) ** 2 - ((ys - 34) / 20) ** 2
    notch = np.exp(-(((xs - 50) / 6) ** 2) - ((ys - 34) / 5) ** 2)
    mask: np.ndarray = np.tanh(3 * (ellipse - notch)).astype(np.float32)
    return mask


def median_seconds(function: Callable[[], object], *, repeats: int = 30) -> float:
    warm_up(function, seconds=0.1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def opencv_contours() -> Callable[[np.ndarray], object] | None:
    """OpenCV's findContours as a yardstick (it traces pixel centres, not the exact pixel edges); None without cv2."""
    try:
        import cv2
    except ImportError:
        return None

    def contours(mask: np.ndarray) -> object:
        return cv2.findContours(mask.view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)

    return contours


def outline_rows() -> list[tuple[str, str, str, float, float, float | None, int]]:
    """Per mask: name, image, box, paste ms, outline + area ms, OpenCV ms (or None) and polygon count."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        decoder = VaeDecoder.from_npz(write_random_vae_npz(Path(tmp) / "vae-oid.npz"))
    decoded = decoder.decode(rng.integers(0, 128, size=(1, 16)))[0]
    cases = [
        ("smooth (real-like)", smooth_mask64(), (640, 480), (100.4, 80.9, 420.2, 330.7)),
        ("smooth (real-like)", smooth_mask64(), (1920, 1080), (300.0, 100.0, 1500.0, 1000.0)),
        ("random-weight decode", decoded, (640, 480), (100.4, 80.9, 420.2, 330.7)),
    ]
    contours = opencv_contours()
    rows = []
    for name, mask64, (width, height), box in cases:
        t_paste = median_seconds(lambda: paste_mask(mask64, box, width=width, height=height))  # noqa: B023
        pasted = paste_mask(mask64, box, width=width, height=height)
        t_outline = median_seconds(lambda: (mask_outline(pasted), mask_area(pasted)))  # noqa: B023
        t_opencv = None if contours is None else median_seconds(lambda: contours(pasted)) * 1e3  # noqa: B023
        parts = len(getattr(mask_outline(pasted), "geoms", [None]))
        box_wh = f"{int(box[2]) - int(box[0])}x{int(box[3]) - int(box[1])}"
        rows.append((name, f"{width}x{height}", box_wh, t_paste * 1e3, t_outline * 1e3, t_opencv, parts))
    return rows


def goal_line(what: str, met: bool, detail: str) -> str:
    return f"goal: {what}: {'met' if met else 'MISSED'} ({detail})"


def main() -> None:
    if "--decoder-json" in sys.argv:  # the one-thread child
        print(json.dumps({"rows": decoder_rows(time.thread_time, rounds=ROUNDS), "note": threads_note()}))
        return
    cores = os.cpu_count()
    load_before = os.getloadavg()[0]
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.mask_decode", "--decoder-json"],
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    single = json.loads(child.stdout)
    default_rows = decoder_rows(time.perf_counter, rounds=ROUNDS)

    print(f"{cores} cores, load average {load_before:.1f} at the start\n")
    print_decoder_table("Mask decoding, one thread each, CPU time", single["rows"], single["note"])
    print()
    print_decoder_table("Mask decoding, default threads, wall time", default_rows, threads_note())
    print(f"(speed: the median over {ROUNDS} rounds of torch's time / numpy's time in the same round)")
    print()
    print("Paste + outline, ms per mask (median); OpenCV findContours for scale (pixel centres, not pixel edges):")
    header = f"{'mask':<22}  {'image':>9}  {'box':>9}  {'paste':>7}  {'outline+area':>12}  {'OpenCV':>7}  {'parts':>5}"
    print(header)
    rows = outline_rows()
    for name, image, box_wh, paste_ms, outline_ms, opencv_ms, parts in rows:
        opencv = "n/a" if opencv_ms is None else f"{opencv_ms:.2f}"
        print(f"{name:<22}  {image:>9}  {box_wh:>9}  {paste_ms:>7.2f}  {outline_ms:>12.2f}  {opencv:>7}  {parts:>5}")

    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    speed_1, speed_default = single["rows"][-1]["speed"], default_rows[-1]["speed"]
    outline_ms = rows[1][4]
    goal = "numpy decoder >= torch at batch 16"
    print(goal_line(f"{goal}, one thread each", speed_1 >= DECODER_GOAL, f"{speed_1:.2f}x"))
    detail = f"{speed_default:.2f}x; wall time, which says little unless the machine is otherwise idle"
    print(goal_line(f"{goal}, default threads", speed_default >= DECODER_GOAL, detail))
    goal = f"outline + area of the 1200x900 mask <= {OUTLINE_GOAL_MS:g} ms"
    print(goal_line(goal, outline_ms <= OUTLINE_GOAL_MS, f"{outline_ms:.2f} ms"))


if __name__ == "__main__":
    main()
