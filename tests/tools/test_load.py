"""Load on loopback: 200 concurrent tool calls and 50 concurrent MCP clients against the real
tiny server complete with zero errors, the concurrency limit holds, memory stays bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

import tools
from tests.conftest import TinyServer
from tests.fault_proxy import FaultProxy
from tests.images import data_uri, gradient_image
from tests.mcp_http import mcp_http_server

pytestmark = pytest.mark.vllm
ANSWER = "<loc0100><loc0200><loc0300><loc0400> cat"
FORCED = {"structured_outputs": {"choice": [ANSWER]}}
MIB = 1024 * 1024


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def test_200_concurrent_tool_calls(tiny_server: TinyServer) -> None:
    proxy = FaultProxy(tiny_server.base_url.removesuffix("/v1")).start()
    images = [gradient_image(160, 120, seed=i) for i in range(200)]
    server_before = tree_rss(tiny_server.pid)
    ours_before = psutil.Process().memory_info().rss

    async def calls() -> list[Any]:
        async with tools.PaliGemmaClient(base_url=proxy.base_url, extra_body=FORCED, max_concurrency=32) as c:
            jobs = [tools.alocate_objects(image, "cat", client=c) for image in images]
            return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        started = time.monotonic()
        results = asyncio.run(calls())
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert all(r.objects[0].label == "cat" for r in results)
    assert proxy.completions == 200
    assert 1 < proxy.max_in_flight <= 32  # requests overlapped, never beyond the client's limit
    assert psutil.Process().memory_info().rss - ours_before < 300 * MIB
    assert tree_rss(tiny_server.pid) - server_before < 500 * MIB
    print(f"200 calls in {elapsed:.1f} s")


@pytest.fixture
def http_mcp(tiny_server: TinyServer) -> Iterator[tuple[str, int]]:
    with mcp_http_server(tiny_server.base_url, "--no-annotated-images") as running:
        yield running


def test_50_concurrent_mcp_clients(http_mcp: tuple[str, int]) -> None:
    url, pid = http_mcp
    image = data_uri(gradient_image(120, 90))
    results: list[Any] = []

    async def one() -> None:
        async with Client(url) as session:
            results.append(await session.call_tool("caption_image", {"image": image, "detail": None, "lang": None}))

    async def fifty() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)

    before = psutil.Process(pid).memory_info().rss
    anyio.run(fifty)
    assert len(results) == 50
    assert [r for r in results if r.is_error] == []
    assert all(r.structured_content["prompt"] == "caption en" for r in results)
    assert psutil.Process(pid).memory_info().rss - before < 300 * MIB
