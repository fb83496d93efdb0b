"""ASGI middleware: with several vLLM engines (data parallelism), fill one before the next.

vLLM shares requests between its data-parallel engines round-robin when they are equally
loaded, so requests that come one at a time alternate between engines. On CPU that costs: an
engine that has just answered keeps its model worker spinning on its queue for vLLM's busy-wait
second, and on a machine with a core per engine that worker holds its core from the API server
and the engine that is working (docs/benchmarks.md, "Two engines, one a core"). This middleware
sends each generation request to the lowest engine with fewer than `PACK_PER_ENGINE` requests in
flight through this API server, or, when every engine has that many, to the least loaded one,
by vLLM's own `X-data-parallel-rank` request header. A few requests at a time then go to engine
0 alone; many are shared evenly as before.

`serve` adds it on CPU with `--data-parallel-size` above 1 and tells it the engine count in
PALIGEMMA_DATA_PARALLEL_SIZE; it counts only what passes through its own process.
"""

from __future__ import annotations

import os

from server.vllm_plugin import App, Receive, Scope, Send

PACKING_MIDDLEWARE = "server.engine_packing.PackedEngines"
ENGINES_ENV = "PALIGEMMA_DATA_PARALLEL_SIZE"
PACK_ENV = "PALIGEMMA_PACK_PER_ENGINE"
PACK_PER_ENGINE = 4  # requests in flight on an engine before the next one gets any
RANK_HEADER = b"x-data-parallel-rank"
ROUTED_PATHS = ("/v1/chat/completions", "/v1/completions")


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}; unset it for {default}.")
    return value


def choose_engine(in_flight: list[int], pack: int) -> int:
    """The lowest engine with fewer than `pack` requests in flight, else the least loaded (lowest first)."""
    for rank, count in enumerate(in_flight):
        if count < pack:
            return rank
    return min(range(len(in_flight)), key=in_flight.__getitem__)


class PackedEngines:
    def __init__(self, app: App) -> None:
        self.app = app
        self.in_flight = [0] * _positive_int(ENGINES_ENV, 1)
        self.pack = _positive_int(PACK_ENV, PACK_PER_ENGINE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            len(self.in_flight) < 2
            or scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in ROUTED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        rank = choose_engine(self.in_flight, self.pack)
        headers = [(name, value) for name, value in scope.get("headers", ()) if name.lower() != RANK_HEADER]
        scope = {**scope, "headers": [*headers, (RANK_HEADER, str(rank).encode())]}
        self.in_flight[rank] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[rank] -= 1
