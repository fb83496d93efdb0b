"""Where the time of one served tool call goes, alone and 16 at a time, end to end.

    .venv/bin/python -m benchmarks.profile_call [--model random|tiny|PATH] [--calls 48]
        [--photo 640x480] [--py-spy PATH] [--serve-arg=--max-num-seqs=16 ...]

The tools' side is timed with perf_counter spans inside one `locate_objects` call, step by
step as tools/functions.py runs it (load the file, downscale + encode, the HTTP round trip,
parse the answer). The server's side comes from vLLM's own `/metrics` histograms, read
before and after each run: e2e (from the API server rendering the request to the last
token), queued, prefill and decode time in the engine. What is left of e2e is the API
server's work before the engine (image decode, the HF processor, tokenizing, IPC); what is
left of the HTTP round trip beyond e2e is HTTP and request parsing. With `--py-spy`, a
sampling profile of the server's processes while 16 calls run says which code the CPU ran.
Each call generates 32 tokens (EOS ignored), as `benchmarks.serving` does. Times are means.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import checkpoint_for, photo_like, print_table
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from tools import PaliGemmaClient, encode_for_model, load_image
from tools.tasks import LOCATE_OBJECTS, LocateOptions, Reply

NEW_TOKENS = 32
SERVER_HISTOGRAMS = {
    "e2e": "vllm:e2e_request_latency_seconds",
    "queued": "vllm:request_queue_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
}
# py-spy frames -> what they are, first match from the innermost frame outwards.
FRAME_KINDS = (
    ("spin-waiting for the other process (sched_yield)", re.compile(r"sched_yield|SpinCondition\.wait|spinloop")),
    ("model forward (engine)", re.compile(r"execute_model|_model_forward|forward \(")),
    ("sampling + outputs (engine)", re.compile(r"sample|_bookkeeping|update_from_output")),
    ("scheduler (engine)", re.compile(r"scheduler\.py")),
    ("image decode (PIL)", re.compile(r"PIL/|load_base64|load_bytes|media/image")),
    ("HF processor + tokenizer", re.compile(r"transformers/|tokenizers|processing_|_call_hf_processor")),
    ("vLLM multimodal inputs + cache", re.compile(r"vllm/multimodal/")),
    ("detokenize + output", re.compile(r"detokeniz|output_processor")),
    ("request JSON + validation", re.compile(r"pydantic|json|protocol\.py")),
    ("HTTP server (uvicorn, starlette)", re.compile(r"uvicorn|starlette|h11|httptools|fastapi")),
    ("ZMQ/msgpack IPC", re.compile(r"zmq|msgpack|serial_utils|core_client")),
    ("asyncio + other", re.compile(r".")),
)


PY_SPY_TITLE = "Where the server's CPU went at 16 concurrent (py-spy samples of on-CPU Python stacks, all processes)"
PY_SPY_HEADER = ["process", "work", "samples", "share"]


@dataclass
class Spans:
    """Seconds per step of each call, in the order the tools run them."""

    steps: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name].append(time.perf_counter() - started)

    def mean_ms(self, name: str) -> float:
        return statistics.fmean(self.steps[name]) * 1000


def histogram_sums(base_url: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of vLLM's request-time histograms, from its Prometheus endpoint."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, tuple[float, float]] = {}
    for key, metric in SERVER_HISTOGRAMS.items():
        total = sum(float(m) for m in re.findall(rf"^{metric}_sum{{[^}}]*}} (\S+)$", text, re.M))
        count = sum(float(m) for m in re.findall(rf"^{metric}_count{{[^}}]*}} (\S+)$", text, re.M))
        found[key] = (total, count)
    return found


def server_means_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    means = {}
    for key in SERVER_HISTOGRAMS:
        total = after[key][0] - before[key][0]
        count = after[key][1] - before[key][1]
        means[key] = total / count * 1000 if count else float("nan")
    return means


def one_call(client: PaliGemmaClient, path: Path, spans: Spans) -> None:
    """One `locate_objects` call, step by step as tools/functions.run_task runs it."""
    options = LocateOptions(objects=["cat"])
    prompt, _ = LOCATE_OBJECTS.request(options)
    with spans.span("total"):
        with spans.span("load (read, decode, EXIF)"):
            loaded = load_image(path, client.image_policy)
        with spans.span("downscale + encode (JPEG, base64)"):
            encoded = encode_for_model(loaded, min_side_px=client.send_side_px(client.model()))
        with spans.span("HTTP round trip"):
            completion = client.complete(
                encoded, prompt, max_tokens=NEW_TOKENS, extra_body={"ignore_eos": True, "min_tokens": NEW_TOKENS}
            )
        with spans.span("parse answer"):
            LOCATE_OBJECTS.read(options, Reply(prompt, completion, loaded, client))
    spans.steps["bytes sent"].append(encoded.bytes_sent / 1000)  # kB, averaged like the rest


@dataclass(frozen=True)
class Run:
    concurrency: int
    calls: int
    wall_s: float
    spans: Spans
    server_ms: dict[str, float]


def run(client: PaliGemmaClient, paths: list[Path], concurrency: int) -> Run:
    spans = Spans()
    before = histogram_sums(client.base_url)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda p: one_call(client, p, spans), paths))
    wall = time.perf_counter() - started
    return Run(concurrency, len(paths), wall, spans, server_means_ms(before, histogram_sums(client.base_url)))


def py_spy_profile(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling the server's process tree (the API server and the engine core) for `seconds`."""
    return subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--format", "raw"),
            *("--rate", "50", "--duration", str(int(seconds)), "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_py_spy(raw: Path) -> list[list[str]]:
    """Samples per process and kind of work (the innermost frame that says what it is)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        whole = ";".join(frames)
        process = (
            "model worker"
            if "WorkerProc" in whole or "worker_busy_loop" in whole
            else "engine core (scheduler)"
            if "EngineCore" in whole or "run_engine_core" in whole
            else "API server"
            if "api_server" in frames[0]  # py-spy's first frame names the process: pid and command line
            else frames[0][:60]
        )
        for kind, pattern in FRAME_KINDS:
            if any(pattern.search(frame) for frame in reversed(frames[1:])):
                counts[(process, kind)] += int(count)
                break
    total = sum(counts.values()) or 1
    return [[process, kind, f"{n}", f"{n / total:.0%}"] for (process, kind), n in counts.most_common()]


def report(runs: list[Run], photo: str, load_before: float) -> None:
    steps = [
        "load (read, decode, EXIF)",
        "downscale + encode (JPEG, base64)",
        "HTTP round trip",
        "parse answer",
        "total",
    ]
    rows = []
    for name in steps:
        rows.append([f"tools: {name}", *(f"{r.spans.mean_ms(name):.1f}" for r in runs)])
    server = [
        ("server: e2e (render to last token)", "e2e"),
        ("server: queued in the engine", "queued"),
        ("server: prefill (engine)", "prefill"),
        ("server: decode, 31 steps (engine)", "decode"),
    ]
    for label, key in server:
        rows.append([label, *(f"{r.server_ms[key]:.1f}" for r in runs)])
    rows.append(
        [
            "derived: API server before the engine (image decode, processor, IPC)",
            *(
                f"{r.server_ms['e2e'] - r.server_ms['queued'] - r.server_ms['prefill'] - r.server_ms['decode']:.1f}"
                for r in runs
            ),
        ]
    )
    rows.append(
        [
            "derived: HTTP + request parsing + client SDK (round trip - e2e)",
            *(f"{r.spans.mean_ms('HTTP round trip') - r.server_ms['e2e']:.1f}" for r in runs),
        ]
    )
    rows.append(["image sent (kB, base64)", *(f"{statistics.fmean(r.spans.steps['bytes sent']):.0f}" for r in runs)])
    rows.append(["throughput (calls/s)", *(f"{r.calls / r.wall_s:.1f}" for r in runs)])
    print_table(
        f"One locate_objects call, mean ms per call ({photo} JPEG, 'detect cat', {NEW_TOKENS} tokens; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores)",
        ["step", *(f"{r.concurrency} concurrent ({r.calls} calls)" for r in runs)],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random", help="'random' (built now), 'tiny' (the trained one) or a path")
    parser.add_argument("--calls", type=int, default=48)
    parser.add_argument("--photo", default="640x480", help="WIDTHxHEIGHT of the JPEGs sent")
    parser.add_argument("--send-min-side", type=int, default=None, help="the client's send_min_side_px")
    parser.add_argument("--py-spy", default=None, help="path of a py-spy binary: profile the server at 16 concurrent")
    parser.add_argument("--py-spy-out", default=None, help="keep py-spy's raw samples in this file")
    parser.add_argument("--summarize", default=None, help="only print the table of a file kept by --py-spy-out")
    parser.add_argument("--eager", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra vLLM argument (repeatable)")
    args = parser.parse_args()
    if args.summarize:
        print_table(PY_SPY_TITLE, PY_SPY_HEADER, summarize_py_spy(Path(args.summarize)))
        return
    width, height = (int(v) for v in args.photo.split("x"))
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp, checkpoint_for(args.model) as checkpoint:
        made = iter(range(10**9))

        def fresh(count: int) -> list[Path]:
            """New photos: vLLM caches processed images and prefixes, a repeated image would skip work."""
            paths = []
            for seed in (next(made) for _ in range(count)):
                path = Path(tmp) / f"photo{seed}.jpg"
                photo_like(width, height, seed).save(path, quality=90)
                paths.append(path)
            return paths

        options = ServeOptions(model=checkpoint, port=free_port(), eager=args.eager, vllm_args=tuple(args.serve_arg))
        the_plan = serve.plan(options, device="cpu")
        print(the_plan.command.shell(), flush=True)
        with serve.running(the_plan, echo=False, timeout_s=900) as server:
            extra = {} if args.send_min_side is None else {"send_min_side_px": args.send_min_side}
            with PaliGemmaClient(
                base_url=the_plan.command.base_url, timeout_s=900, max_concurrency=64, **extra
            ) as client:
                for path in fresh(8):  # warm-up: the first calls of each shape build kernels
                    one_call(client, path, Spans())
                run(client, fresh(16), 16)  # the batch shapes of 16 at a time, untimed
                runs = [run(client, fresh(args.calls), 1), run(client, fresh(args.calls), 16)]
                profile = None
                if args.py_spy:
                    raw = Path(args.py_spy_out or Path(tmp) / "py-spy.txt")
                    batches = [fresh(args.calls) for _ in range(3)]
                    spy = py_spy_profile(args.py_spy, server.pid, 600, raw)
                    time.sleep(2)  # py-spy attaches
                    for batch in batches:
                        run(client, batch, 16)
                    spy.send_signal(signal.SIGINT)  # py-spy writes what it has sampled and exits
                    spy.wait(timeout=120)
                    profile = summarize_py_spy(raw) if raw.exists() else None
        report(runs, args.photo, load_before)
        if profile is not None:
            print_table(PY_SPY_TITLE, PY_SPY_HEADER, profile)


if __name__ == "__main__":
    main()
