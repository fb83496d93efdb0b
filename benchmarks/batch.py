"""Batch throughput: `paligemma detect` over a folder at concurrency 1, 4 and 16 against the
tiny served model, and the transformers generate loop over the same images.

    .venv/bin/python -m benchmarks.batch [--images 32]

Both sides do the same work per image: load the file, run `detect cat ; dog` and produce
up to 32 tokens (the tiny model writes random tokens until the limit), and for the batch
also parse and record the result. The server is stopped before the loop runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import TransformersLoop, photo_like, print_table, tiny_model
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions

NEW_TOKENS = 32
EXTRA_BODY = '{"ignore_eos": true, "max_tokens": 32}'


def batch_seconds(folder: Path, base_url: str, concurrency: int, output: Path) -> float:
    command = [
        sys.executable, "-m", "clients.cli", "detect", str(folder), "--objects", "cat ; dog", "-o", str(output),
        "--base-url", base_url, "--concurrency", str(concurrency), "--extra-body", EXTRA_BODY, "--no-progress",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, tiny_model() as checkpoint:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(args.images):
            photo_like(640, 480, seed=i).save(folder / f"{i:03d}.jpg", quality=90)
        files = sorted(folder.glob("*.jpg"))
        the_plan = serve.plan(ServeOptions(model=str(checkpoint), port=free_port()), device="cpu")
        with serve.running(the_plan, echo=False, timeout_s=300):
            batch_seconds(folder, the_plan.command.base_url, 4, Path(tmp) / "warmup.jsonl")
            served = {
                c: batch_seconds(folder, the_plan.command.base_url, c, Path(tmp) / f"c{c}.jsonl") for c in (1, 4, 16)
            }
        loop = TransformersLoop.load(checkpoint)
        loop.generate(Image.open(files[0]).convert("RGB"), "detect cat ; dog", NEW_TOKENS)  # warm-up
        started = time.perf_counter()
        for path in files:
            with Image.open(path) as image:
                loop.generate(image.convert("RGB"), "detect cat ; dog", NEW_TOKENS)
        loop_rate = len(files) / (time.perf_counter() - started)
    rows = [["transformers generate loop", "1 (a loop)", f"{loop_rate:.2f}", "1.00x"]]
    for concurrency, seconds in served.items():
        rate = len(files) / seconds
        rows.append(["paligemma detect (served)", str(concurrency), f"{rate:.2f}", f"{rate / loop_rate:.2f}x"])
    print_table(
        f"Images per second, {len(files)} JPEGs 640x480, 'detect cat ; dog', {NEW_TOKENS} tokens each, tiny model "
        "(batch times include starting the command)",
        ["how", "concurrency", "images/s", "vs loop"],
        rows,
    )


if __name__ == "__main__":
    main()
