"""What PaliGemma's own attention costs when served: `--attention prefix` against `--attention causal`.

    .venv/bin/python -m benchmarks.attention [--requests 48] [--new-tokens 8,32] [--accuracy-scenes 0]

Cost: the tiny random checkpoint served twice on this machine, once per mode, one server at a
time. Every request has an image of its own (no prefix-cache or encoder-cache hits, so each
prefill is paid in full); per mode and answer length: the median latency of one request, and
throughput at 1, 4 and 16 concurrent requests (median of the timed passes, after an untimed
pass that warms each batch size up). Prints a table with prefix / causal ratios.

Accuracy (`--accuracy-scenes N`): the trained tiny model (`--model tiny`) served in each mode,
and transformers in-process with each mask, scored by `training.evaluate` on N held-out scenes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import openai

from benchmarks.common import image_data_uri, median_ms, photo_like, print_table, timed, tiny_model
from server import serve
from server.model_source import TINY_NAME, resolve
from server.process import free_port
from server.vllm_command import ServeOptions
from server.vllm_plugin import ATTENTION_MODES, Attention

PROMPT = "detect cat"
CONCURRENCIES = (1, 4, 16)
PASSES = 3
LATENCY_SAMPLES = 10


def ask(client: openai.OpenAI, model: str, uri: str, new_tokens: int) -> float:
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
class Cost:
    latency_ms: dict[int, float]  # by answer length
    rps: dict[tuple[int, int], float]  # by (answer length, concurrency): median of the timed passes


class FreshImages:
    """A new image for every request, so that no cache spares a prefill."""

    def __init__(self) -> None:
        self.seed = 0

    def take(self, n: int) -> list[str]:
        uris = [image_data_uri(photo_like(320, 240, self.seed + i), "JPEG") for i in range(n)]
        self.seed += n
        return uris


def measure(checkpoint: Path, attention: Attention, requests: int, lengths: list[int]) -> Cost:
    the_plan = serve.plan(ServeOptions(model=str(checkpoint), port=free_port(), attention=attention), device="cpu")
    images = FreshImages()
    latency: dict[int, float] = {}
    rps: dict[tuple[int, int], float] = {}
    with serve.running(the_plan, echo=False, timeout_s=900):
        model = the_plan.command.served_model_name
        with openai.OpenAI(base_url=the_plan.command.base_url, api_key="EMPTY", max_retries=0) as client:
            for new_tokens in lengths:

                def one(uri: str, new_tokens: int = new_tokens) -> float:
                    return ask(client, model, uri, new_tokens)

                for uri in images.take(3):  # warm-up
                    one(uri)
                latency[new_tokens] = median_ms([one(uri) for uri in images.take(LATENCY_SAMPLES)])
                for c in CONCURRENCIES:
                    with concurrent.futures.ThreadPoolExecutor(c) as pool:
                        walls = [
                            timed(lambda: list(pool.map(one, images.take(requests))))[0] for _ in range(PASSES + 1)
                        ]
                    rps[new_tokens, c] = statistics.median(requests / wall for wall in walls[1:])
    return Cost(latency, rps)


def cost_table(requests: int, lengths: list[int]) -> None:
    with tiny_model() as checkpoint:
        costs = {mode: measure(checkpoint, mode, requests, lengths) for mode in ATTENTION_MODES}
    prefix, causal = costs["prefix"], costs["causal"]
    rows = []
    for n in lengths:
        rows.append(
            [
                f"one request, {n} tokens: latency, median (ms)",
                f"{prefix.latency_ms[n]:.0f}",
                f"{causal.latency_ms[n]:.0f}",
                f"{prefix.latency_ms[n] / causal.latency_ms[n]:.2f}",
            ]
        )
        for c in CONCURRENCIES:
            p, q = prefix.rps[n, c], causal.rps[n, c]
            rows.append(
                [f"{n} tokens, {c} concurrent: throughput (requests/s)", f"{p:.1f}", f"{q:.1f}", f"{p / q:.2f}"]
            )
    print_table(
        f"Prefix vs causal attention served (vLLM CPU, tiny random PaliGemma 2: 256 image tokens + '{PROMPT}'), "
        f"{requests} requests a pass, each with its own 320x240 JPEG",
        ["metric", "--attention prefix", "--attention causal", "prefix / causal"],
        rows,
    )
    print(f"\nThroughput: median of {PASSES} timed passes after an untimed one; latency: median of {LATENCY_SAMPLES}.")


def accuracy_table(scenes: int) -> None:
    from tools.vae_checkpoint import load_vae_decoder
    from training import evaluate

    held_out = evaluate.held_out_scenes(scenes)
    requests = [r for i, s in enumerate(held_out) for r in evaluate.requests_for(i, s)]
    source = resolve(TINY_NAME)
    size_px = evaluate.model_input_size_px(Path(source.location))
    columns: dict[str, dict[str, float]] = {}
    for mode in ATTENTION_MODES:
        the_plan = serve.plan(ServeOptions(model=TINY_NAME, port=free_port(), attention=mode), device="cpu")
        with serve.running(the_plan, echo=False, timeout_s=900):
            served = evaluate.served_results(
                the_plan.command.base_url, the_plan.command.served_model_name, held_out, requests
            )
        columns[f"served --attention {mode}"] = evaluate.score(held_out, requests, served, input_size_px=size_px)
    decoder = load_vae_decoder(model=source.served_name)
    for mode in ATTENTION_MODES:
        results = evaluate.transformers_results(
            Path(source.location), held_out, requests, attention=mode, decoder=decoder
        )
        columns[f"transformers {mode}"] = evaluate.score(held_out, requests, results, input_size_px=size_px)
    names = list(columns)
    metrics = list(next(iter(columns.values())))
    print_table(
        f"Trained tiny PaliGemma 2, {len(held_out)} held-out scenes, {len(requests)} questions",
        ["metric", *names],
        [[m, *(f"{columns[n][m]:.3f}" for n in names)] for m in metrics],
    )
    for mode in ATTENTION_MODES:
        gap = max(abs(columns[f"served --attention {mode}"][m] - columns[f"transformers {mode}"][m]) for m in metrics)
        print(f"largest gap, served {mode} vs transformers {mode}: {gap:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48, help="requests per timed pass")
    parser.add_argument("--new-tokens", default="8,32", help="answer lengths, comma-separated")
    parser.add_argument("--accuracy-scenes", type=int, default=0, help="held-out scenes for the accuracy table")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost table")
    args = parser.parse_args()
    if not args.no_cost:
        cost_table(args.requests, [int(n) for n in args.new_tokens.split(",")])
    if args.accuracy_scenes:
        accuracy_table(args.accuracy_scenes)


if __name__ == "__main__":
    main()
