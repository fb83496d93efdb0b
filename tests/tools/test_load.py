"""Load on loopback: 200 concurrent tool calls and 50 concurrent MCP clients against the real
tiny server complete with zero errors and the concurrency limit holds. The memory they take is
measured by benchmarks/hardening.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client

import tools
from tests.fault_proxy import FaultProxy
from tests.images import data_uri, gradient_image
from tests.mcp_http import mcp_http_server
from tests.server_pool import TinyServer

pytestmark = pytest.mark.vllm
ANSWER = "<loc0100><loc0200><loc0300><loc0400> cat"
FORCED = {"structured_outputs": {"choice": [ANSWER]}}


def test_200_concurrent_tool_calls(tiny_server: TinyServer) -> None:
    proxy = FaultProxy(tiny_server.base_url.removesuffix("/v1")).start()
    images = [gradient_image(160, 120, seed=i) for i in range(200)]

    async def calls() -> list[Any]:
        # Zero errors is the claim, not a latency: on a busy machine the last calls wait long in the queue.
        client = tools.PaliGemmaClient(base_url=proxy.base_url, extra_body=FORCED, max_concurrency=32, timeout_s=900)
        async with client as c:
            jobs = [tools.alocate_objects(image, "cat", client=c) for image in images]
            return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(calls())
    finally:
        proxy.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert all(r.objects[0].label == "cat" for r in results)
    assert proxy.completions == 200
    assert 1 < proxy.max_in_flight <= 32  # requests overlapped, never beyond the client's limit


@pytest.fixture
def http_mcp(tiny_server: TinyServer) -> Iterator[str]:
    with mcp_http_server(tiny_server.base_url, "--no-annotated-images") as (url, _):
        yield url


def test_50_concurrent_mcp_clients(http_mcp: str) -> None:
    url = http_mcp
    image = data_uri(gradient_image(120, 90))
    results: list[Any] = []

    async def one() -> None:
        async with Client(url) as session:
            results.append(await session.call_tool("caption_image", {"image": image, "detail": None, "lang": None}))

    async def fifty() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)

    anyio.run(fifty)
    assert len(results) == 50
    assert [r for r in results if r.is_error] == []
    assert all(r.structured_content["prompt"] == "caption en" for r in results)
