"""Parse speed: `tools.parse_detections` vs supervision's `Detections.from_vlm(PALIGEMMA)`.

    .venv/bin/python -m benchmarks.parsing [--strings 10000]

The same strings for both: 1 to 5 objects each in PaliGemma's format, labels with spaces,
a tenth of them with a truncated last object. Ours also returns typed results with the
raw text and a report of what did not parse; supervision returns arrays.
"""

from __future__ import annotations

import argparse
import random
import time

import supervision as sv

from benchmarks.common import print_table
from tools import parse_detections

LABELS = ["cat", "dog", "traffic light", "person", "red car", "coffee cup", "tree"]


def answers(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        objects = []
        for _ in range(rng.randint(1, 5)):
            y0, x0 = rng.randint(0, 900), rng.randint(0, 900)
            y1, x1 = rng.randint(y0 + 1, 1023), rng.randint(x0 + 1, 1023)
            objects.append(f"<loc{y0:04d}><loc{x0:04d}><loc{y1:04d}><loc{x1:04d}> {rng.choice(LABELS)}")
        text = " ; ".join(objects)
        if i % 10 == 0:
            text += " ; <loc0100><loc0200>"  # truncated last group
        out.append(text)
    return out


def best_of(repeats: int, fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strings", type=int, default=10_000)
    args = parser.parse_args()
    texts = answers(args.strings)
    width, height = 640, 480

    def ours() -> int:
        return sum(len(parse_detections(t, width=width, height=height).objects) for t in texts)

    def theirs() -> int:
        return sum(len(sv.Detections.from_vlm(sv.VLM.PALIGEMMA, t, resolution_wh=(width, height))) for t in texts)

    found_ours, found_theirs = ours(), theirs()  # warm-up, and the counts for the table
    ours_s = best_of(5, ours)
    theirs_s = best_of(5, theirs)
    print_table(
        f"Parsing {len(texts):,} PaliGemma detection answers (best of 5)",
        ["parser", "total ms", "us per string", "objects found", "speed vs supervision"],
        [
            [
                "tools.parse_detections",
                f"{ours_s * 1000:.0f}",
                f"{ours_s / len(texts) * 1e6:.1f}",
                f"{found_ours:,}",
                f"{theirs_s / ours_s:.2f}x",
            ],
            [
                "supervision from_vlm",
                f"{theirs_s * 1000:.0f}",
                f"{theirs_s / len(texts) * 1e6:.1f}",
                f"{found_theirs:,}",
                "1.00x",
            ],
        ],
    )


if __name__ == "__main__":
    main()
