"""The served path against what a user would run instead: transformers `generate`, one image at a
time and in batches of 16, on the tiny checkpoints, on this machine.

    .venv/bin/python -m benchmarks.serving [--models random,tiny] [--served default,compiled]
        [--requests 64] [--new-tokens 32] [--serve-arg=--max-num-seqs=32 ...]

Every side gets JPEG photos of the same size and kind (decoded on each side), the same prompt
and number of generated tokens (EOS ignored), and the machine to itself (the server is stopped
before transformers runs). No served request repeats an image (vLLM would reuse its cached
prefix). The served side is what a tools user runs: `load_image` + `encode_for_model` + one
chat completion through `PaliGemmaClient` (one connection pool), as tools/functions.py does.
`--served` names server configurations: `default` is what `paligemma serve` picks on CPU,
`compiled` and `eager` force torch.compile on or off. vLLM on CPU builds kernels for each new
batch shape, so each concurrency level is run once untimed before 5 timed passes. Prints one
table per model, the ratios against both references, and whether each goal is met.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from benchmarks.common import TransformersLoop, checkpoint_for, median_ms, photo_like, print_table, timed
from server import serve
from server.engine_packing import ENGINES_ENV
from server.model_source import TINY_NAME
from server.process import free_port
from server.vllm_command import ServeOptions
from tools import PaliGemmaClient, encode_for_model, load_image

PROMPT = "detect cat"
CONCURRENCIES = (1, 4, 16)
PASSES = 5
BATCH = 16
GOAL_VS_LOOP = 3.0  # served at 16 concurrent, against the one-at-a-time loop
GOAL_VS_BATCHED = 1.0  # served at 16 concurrent, against generate over batches of 16
GOAL_LATENCY = 1.3  # single served request latency, at most this times the loop's


@dataclass(frozen=True)
class Configuration:
    """A served configuration: `serve`'s options, environment variables exported around the
    start (a variable the user exported wins over serve's default, see server/serve.py), and
    the shorter side the client sends images at, where not the model's own."""

    options: ServeOptions = field(default_factory=lambda: ServeOptions(model=""))
    env: dict[str, str] = field(default_factory=dict)
    send_side_px: int | None = None

    def serve_options(self, checkpoint: str, port: int, extra_vllm_args: tuple[str, ...] = ()) -> ServeOptions:
        """`serve`'s options for `checkpoint`: this configuration's own vLLM arguments, then the extra ones."""
        vllm_args = (*self.options.vllm_args, *extra_vllm_args)
        return replace(self.options, model=checkpoint, port=port, vllm_args=vllm_args)


SERVED: dict[str, Configuration] = {
    "default": Configuration(),
    "compiled": Configuration(ServeOptions(model="", eager=False)),
    "eager": Configuration(ServeOptions(model="", eager=True)),
    "one-process": Configuration(env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    "worker-process": Configuration(env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
    # vLLM's token budget per step is 2048 without chunked prefill (which prefix attention turns
    # off): 7 prompts of the random model's 266 tokens, so 16 arrivals take three prefill steps
    "prefill-8k": Configuration(ServeOptions(model="", vllm_args=("--max-num-batched-tokens", "8192"))),
    # the default server, the client sending images at 896 px on the shorter side (what the tools
    # sent the tiny shapes model before they knew it sees 288 px)
    "send-896": Configuration(send_side_px=896),
    # vLLM's CPU default admits 128 sequences a step; the benchmark offers at most 16
    "seqs-16": Configuration(ServeOptions(model="", vllm_args=("--max-num-seqs", "16"))),
    "seqs-32": Configuration(ServeOptions(model="", vllm_args=("--max-num-seqs", "32"))),
    "seqs-16-prefill-8k": Configuration(
        ServeOptions(model="", vllm_args=("--max-num-seqs", "16", "--max-num-batched-tokens", "8192"))
    ),
    # the model's OpenMP threads on both cores (vLLM's own binding leaves one core to the API
    # server and the scheduler; CPUs 0-1, a 2-core machine): tried 2026-12-04, docs/benchmarks.md
    "bind-both": Configuration(env={"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    # two engines (vLLM's data parallelism), `serve` binding each one's model worker to a core of
    # its own (VLLM_CPU_OMP_THREADS_BIND=0|1 on a 2-core machine), vLLM's DP coordinator sharing
    # the requests between them: tried 2026-12-04, docs/benchmarks.md
    # `serve` adds server.engine_packing's middleware to it since 2026-12-05 (one engine answers
    # while few requests are in flight); `dp-2-round-robin` turns that off, leaving vLLM's
    # round-robin, what `dp-2` measured before
    "dp-2": Configuration(ServeOptions(model="", data_parallel_size=2)),
    # one engine asked for: `default` again since `serve` stopped choosing two engines on two CPUs
    # (it did for a few commits of 2026-12-05; docs/benchmarks.md, "Two engines, one a core")
    "one-engine": Configuration(ServeOptions(model="", data_parallel_size=1)),
    "dp-2-round-robin": Configuration(ServeOptions(model="", data_parallel_size=2), env={ENGINES_ENV: "1"}),
    # vLLM's caches keyed by the image: its prefix cache of KV blocks and its cache of processed
    # images (every served request of this benchmark sends a new photo, so neither ever hits);
    # `mm-shm-cache` keeps processed images in shared memory instead of sending them to the engine
    "no-prefix-cache": Configuration(ServeOptions(model="", vllm_args=("--no-enable-prefix-caching",))),
    "no-mm-cache": Configuration(ServeOptions(model="", vllm_args=("--mm-processor-cache-gb", "0"))),
    "mm-shm-cache": Configuration(ServeOptions(model="", vllm_args=("--mm-processor-cache-type", "shm"))),
}


@contextmanager
def exported(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


Rates = tuple[float, float, float]  # median, lowest, highest over the timed passes


def rates(count: int, walls: list[float]) -> Rates:
    per_s = [count / wall for wall in walls]
    return statistics.median(per_s), min(per_s), max(per_s)


@dataclass(frozen=True)
class Served:
    name: str
    cold_s: float
    latency_ms: float
    rps: dict[int, Rates]


def photos(start: int, count: int) -> list[bytes]:
    return [jpeg_bytes(photo_like(640, 480, seed)) for seed in range(start, start + count)]


def served_photos(requests: int) -> list[bytes]:
    """Enough different photos that no served request repeats an image: vLLM caches processed
    images and prompt prefixes, so a repeated image skips most of the work the loop does."""
    return photos(10**6, 4 + 10 + len(CONCURRENCIES) * (PASSES + 1) * requests)


def _all_of(
    pool: concurrent.futures.ThreadPoolExecutor, call: Callable[[bytes], float], batch: list[bytes]
) -> list[float]:
    """`call` on every item of `batch` through `pool`, as many at a time as the pool has threads."""
    return list(pool.map(call, batch))


def measure_served(
    name: str, checkpoint: str, requests: int, fresh: list[bytes], new_tokens: int, vllm_args: tuple[str, ...]
) -> Served:
    configuration = SERVED[name]
    env = configuration.env
    options = configuration.serve_options(checkpoint, free_port(), vllm_args)
    with exported(env):
        the_plan = serve.plan(options, device="cpu")
    print(f"[{name}] {' '.join(f'{k}={v}' for k, v in env.items())} {the_plan.command.shell()}", flush=True)
    started = time.perf_counter()
    with exported(env), serve.running(the_plan, echo=False, timeout_s=900):
        cold = time.perf_counter() - started
        client = PaliGemmaClient(
            base_url=the_plan.command.base_url,
            timeout_s=900,
            max_concurrency=64,
            send_min_side_px=configuration.send_side_px,
        )
        with client:
            body = {"ignore_eos": True, "min_tokens": new_tokens}

            def one(data: bytes) -> float:
                began = time.perf_counter()
                side = client.send_side_px(client.model())
                encoded = encode_for_model(load_image(data, client.image_policy), min_side_px=side)
                client.complete(encoded, PROMPT, max_tokens=new_tokens, extra_body=body)
                return time.perf_counter() - began

            unused = iter(fresh)

            def take(count: int) -> list[bytes]:
                return [next(unused) for _ in range(count)]

            for data in take(4):  # warm-up
                one(data)
            latency = median_ms([one(data) for data in take(10)])
            rps = {}
            for c in CONCURRENCIES:
                with concurrent.futures.ThreadPoolExecutor(c) as pool:
                    # The first pass warms this batch size up, untimed; then the timed passes.
                    batches = [take(requests) for _ in range(PASSES + 1)]
                    walls = [timed(functools.partial(_all_of, pool, one, b))[0] for b in batches][1:]
                rps[c] = rates(requests, walls)
    return Served(name, cold, latency, rps)


@dataclass(frozen=True)
class Reference:
    cold_s: float
    latency_ms: float
    loop: Rates
    batched: Rates


def measure_transformers(checkpoint: str, files: list[bytes], new_tokens: int) -> Reference:
    cold, model = timed(lambda: TransformersLoop.load(Path(checkpoint)))

    def decoded(data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def batched() -> None:
        for i in range(0, len(files), BATCH):
            model.generate_batch([decoded(data) for data in files[i : i + BATCH]], PROMPT, new_tokens)

    def one(data: bytes) -> None:
        model.generate(decoded(data), PROMPT, new_tokens)

    def loop() -> None:
        for data in files:
            one(data)

    one(files[0])  # warm-up
    latency = median_ms([timed(functools.partial(one, data))[0] for data in files[:10]])
    loop_walls = [timed(loop)[0] for _ in range(PASSES)]
    batched()  # warm-up of the batch shape
    batched_walls = [timed(batched)[0] for _ in range(PASSES)]
    return Reference(cold, latency, rates(len(files), loop_walls), rates(len(files), batched_walls))


def spread(r: Rates) -> str:
    return f"{r[0]:.1f} ({r[1]:.1f}-{r[2]:.1f})"


def verdict(what: str, value: float, goal: float, *, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    if met:
        return f"goal: {what} {'<=' if at_most else '>='} {goal:.1f}x: met ({value:.2f}x)"
    short = (value / goal - 1) if at_most else (1 - value / goal)
    return f"goal: {what} {'<=' if at_most else '>='} {goal:.1f}x: MISSED ({value:.2f}x, {short:.0%} short)"


def report(model: str, files: int, new_tokens: int, served: list[Served], ref: Reference, load: str) -> None:
    header = ["metric", *(f"served, {s.name}" for s in served), "transformers loop", f"transformers batch {BATCH}"]
    header += [f"{s.name} / loop" for s in served] + [f"{s.name} / batch {BATCH}" for s in served]
    rows = [
        ["cold start to ready (s)", *(f"{s.cold_s:.1f}" for s in served), f"{ref.cold_s:.1f}", f"{ref.cold_s:.1f}"]
        + ["-"] * (2 * len(served)),
        [
            "single request latency, median (ms)",
            *(f"{s.latency_ms:.0f}" for s in served),
            f"{ref.latency_ms:.0f}",
            "-",
            *(f"{s.latency_ms / ref.latency_ms:.2f}x the loop's" for s in served),
            *("-" for _ in served),
        ],
    ]
    for c in CONCURRENCIES:
        rows.append(
            [
                f"throughput at {c} concurrent (requests/s)",
                *(spread(s.rps[c]) for s in served),
                spread(ref.loop),
                spread(ref.batched),
                *(f"{s.rps[c][0] / ref.loop[0]:.2f}x" for s in served),
                *(f"{s.rps[c][0] / ref.batched[0]:.2f}x" for s in served),
            ]
        )
    print_table(
        f"Served (vLLM CPU, through the tools' client) vs transformers generate: {model} PaliGemma 2, {files} JPEGs "
        f"640x480, '{PROMPT}', {new_tokens} tokens each; {load}",
        header,
        rows,
    )
    print(f"\nThroughput: median (lowest-highest) of {PASSES} passes; ratios of the medians.")
    print(f"The loop runs one image at a time whatever the offered concurrency; the batch column {BATCH} per generate.")
    for s in served:
        lowest = s.rps[16][1]
        print(f"\n[{s.name}]")
        print(verdict("served at 16 concurrent / loop, median", s.rps[16][0] / ref.loop[0], GOAL_VS_LOOP))
        print(verdict("served at 16 concurrent / loop, every pass (slowest)", lowest / ref.loop[0], GOAL_VS_LOOP))
        print(verdict(f"served at 16 concurrent / batch {BATCH}, median", s.rps[16][0] / ref.batched[0], 1.0))
        print(verdict(f"served at 16 concurrent / batch {BATCH}, every pass (slowest)", lowest / ref.batched[0], 1.0))
        print(verdict("single request latency / loop", s.latency_ms / ref.latency_ms, GOAL_LATENCY, at_most=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=f"random,{TINY_NAME}", help="'random' (built now), 'tiny', or paths")
    parser.add_argument("--served", default="default", help=f"server configurations, of {', '.join(SERVED)}")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra vLLM argument for every server")
    args = parser.parse_args()
    files = photos(0, args.requests)  # the transformers side caches nothing: the same photos each pass
    fresh = served_photos(args.requests)
    for model in args.models.split(","):
        load = f"load average {os.getloadavg()[0]:.1f} at the start"
        with checkpoint_for(model) as checkpoint:
            served = [
                measure_served(name, checkpoint, args.requests, fresh, args.new_tokens, tuple(args.serve_arg))
                for name in args.served.split(",")
            ]
            ref = measure_transformers(checkpoint, files, args.new_tokens)
        load += f", {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores)"
        report(model, len(files), args.new_tokens, served, ref, load)


if __name__ == "__main__":
    main()
