"""Served endpoint vs the transformers generate loop, on the tiny checkpoint, on this machine.

    .venv/bin/python -m benchmarks.serving [--requests 32] [--new-tokens 32]

Both sides get the same JPEG files (decoded on each side), prompt and number of generated
tokens (EOS ignored), and the machine to themselves (the server is stopped before the loop
runs). vLLM on CPU builds kernels for each new batch shape, so every concurrency level is
run once untimed before the timed passes (median of 3). Prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import openai
from PIL import Image

from benchmarks.common import TransformersLoop, median_ms, photo_like, print_table, timed, tiny_model
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from tools import data_uri

PROMPT = "detect cat"
CONCURRENCIES = (1, 4, 16)
PASSES = 5


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def served_request(client: openai.OpenAI, model: str, uri: str, new_tokens: int) -> float:
    started = time.perf_counter()
    client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": PROMPT}],
            }
        ],
        max_tokens=new_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    return time.perf_counter() - started


@dataclass(frozen=True)
class Served:
    cold_s: float
    latency_ms: float
    rps: dict[int, tuple[float, float, float]]  # median, lowest, highest of the timed passes


def measure_served(checkpoint: Path, uris: list[str], new_tokens: int, *, eager: bool) -> Served:
    options = ServeOptions(model=str(checkpoint), port=free_port(), eager=eager)
    the_plan = serve.plan(options, device="cpu")
    started = time.perf_counter()
    with serve.running(the_plan, echo=False, timeout_s=600):
        cold = time.perf_counter() - started
        base_url, model = the_plan.command.base_url, the_plan.command.served_model_name
        with openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0) as client:

            def one(uri: str) -> float:
                return served_request(client, model, uri, new_tokens)

            for uri in uris[:4]:  # warm-up
                one(uri)
            latency = median_ms([one(uri) for uri in uris[:10]])
            rps = {}
            for c in CONCURRENCIES:
                with concurrent.futures.ThreadPoolExecutor(c) as pool:
                    # The first pass warms this batch size up, untimed; then five timed passes.
                    walls = [timed(lambda: list(pool.map(one, uris)))[0] for _ in range(PASSES + 1)][1:]
                rates = [len(uris) / wall for wall in walls]
                rps[c] = (statistics.median(rates), min(rates), max(rates))
    return Served(cold, latency, rps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    files = [jpeg_bytes(photo_like(640, 480, seed)) for seed in range(args.requests)]
    uris = [data_uri("image/jpeg", f) for f in files]

    with tiny_model() as checkpoint:
        compiled = measure_served(checkpoint, uris, args.new_tokens, eager=False)
        eager = measure_served(checkpoint, uris, args.new_tokens, eager=True)
        loop_cold, loop = timed(lambda: TransformersLoop.load(checkpoint))

        def from_file(data: bytes) -> str:
            with Image.open(io.BytesIO(data)) as image:
                return loop.generate(image.convert("RGB"), PROMPT, args.new_tokens)

        from_file(files[0])  # warm-up
        loop_latency = median_ms([timed(lambda f=f: from_file(f))[0] for f in files[:10]])
        loop_rates = [len(files) / timed(lambda: [from_file(f) for f in files])[0] for _ in range(PASSES)]
        loop_rps = statistics.median(loop_rates)

    def ratio(value: float, reference: float) -> str:
        return f"{value / reference:.2f}x"

    rows = [
        ["cold start to ready (s)", f"{compiled.cold_s:.1f}", f"{eager.cold_s:.1f}", f"{loop_cold:.1f}", "-", "-"],
        [
            "single request latency, median (ms)",
            f"{compiled.latency_ms:.0f}",
            f"{eager.latency_ms:.0f}",
            f"{loop_latency:.0f}",
            ratio(loop_latency, compiled.latency_ms),
            ratio(loop_latency, eager.latency_ms),
        ],
    ]

    def spread(median: float, low: float, high: float) -> str:
        return f"{median:.1f} ({low:.1f}-{high:.1f})"

    for c in CONCURRENCIES:
        rows.append(
            [
                f"throughput at {c} concurrent (requests/s)",
                spread(*compiled.rps[c]),
                spread(*eager.rps[c]),
                spread(loop_rps, min(loop_rates), max(loop_rates)),
                ratio(compiled.rps[c][0], loop_rps),
                ratio(eager.rps[c][0], loop_rps),
            ]
        )
    print_table(
        f"Served (vLLM CPU) vs transformers generate loop: tiny PaliGemma 2, {len(uris)} JPEGs 640x480, "
        f"'{PROMPT}', {args.new_tokens} tokens each",
        ["metric", "served, compiled", "served, --eager", "transformers loop", "compiled / loop", "eager / loop"],
        rows,
    )
    print(f"\nThroughput: median (lowest-highest) of {PASSES} passes; ratios of the medians.")
    print("The loop handles one image at a time whatever the offered concurrency, as the release notes run it;")
    print("it loads weights in-process while vLLM starts a server, hence its short cold start.")


if __name__ == "__main__":
    main()
