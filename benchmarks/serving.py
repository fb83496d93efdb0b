"""Served endpoint vs the transformers generate loop, on the tiny checkpoint, on this machine.

    .venv/bin/python -m benchmarks.serving [--requests 32] [--new-tokens 32]

Both sides get the same images, prompt and number of generated tokens (EOS ignored), and
the machine to themselves (the server is stopped before the loop runs). Prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

import openai

from benchmarks.common import TransformersLoop, data_uri, median_ms, photo_like, print_table, timed, tiny_model
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions

PROMPT = "detect cat"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    images = [photo_like(640, 480, seed) for seed in range(args.requests)]
    uris = [data_uri(image) for image in images]
    concurrencies = (1, 4, 16)

    with tiny_model() as checkpoint:
        the_plan = serve.plan(ServeOptions(model=str(checkpoint), port=free_port()), device="cpu")
        started = time.perf_counter()
        with serve.running(the_plan, echo=False, timeout_s=300):
            served_cold = time.perf_counter() - started
            base_url, model = the_plan.command.base_url, the_plan.command.served_model_name
            with openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0) as client:
                for uri in uris[:4]:  # warm-up
                    served_request(client, model, uri, args.new_tokens)
                served_latency = [served_request(client, model, uri, args.new_tokens) for uri in uris[:10]]
                served_rps = {}
                for c in concurrencies:
                    with concurrent.futures.ThreadPoolExecutor(c) as pool:
                        wall, _ = timed(
                            lambda pool=pool: list(
                                pool.map(lambda u: served_request(client, model, u, args.new_tokens), uris)
                            )
                        )
                    served_rps[c] = len(uris) / wall

        loop_cold, loop = timed(lambda: TransformersLoop.load(checkpoint))
        loop.generate(images[0], PROMPT, args.new_tokens)  # warm-up
        loop_latency = [timed(lambda i=i: loop.generate(i, PROMPT, args.new_tokens))[0] for i in images[:10]]
        loop_wall, _ = timed(lambda: [loop.generate(i, PROMPT, args.new_tokens) for i in images])
        loop_rps = len(images) / loop_wall

    rows = [
        ["cold start to ready (s)", f"{served_cold:.1f}", f"{loop_cold:.1f}", f"{loop_cold / served_cold:.2f}x"],
        [
            "single request latency, median (ms)",
            f"{median_ms(served_latency):.0f}",
            f"{median_ms(loop_latency):.0f}",
            f"{median_ms(loop_latency) / median_ms(served_latency):.2f}x",
        ],
    ]
    for c in concurrencies:
        rows.append(
            [
                f"throughput at {c} concurrent (requests/s)",
                f"{served_rps[c]:.1f}",
                f"{loop_rps:.1f}",
                f"{served_rps[c] / loop_rps:.2f}x",
            ]
        )
    print_table(
        f"Served (vLLM CPU) vs transformers generate loop: tiny PaliGemma 2, {len(uris)} images 640x480, "
        f"'{PROMPT}', {args.new_tokens} tokens each",
        ["metric", "served", "transformers loop", "ratio (higher = served better)"],
        rows,
    )
    print("\nThe loop handles one image at a time whatever the offered concurrency, as the release notes run it.")
    print("Cold start ratio < 1 means the loop starts faster (it loads weights in-process; vLLM starts a server).")


if __name__ == "__main__":
    main()
