"""`paligemma mcp --transport http`: a message too large or made of millions of values is refused
before the MCP SDK parses it, and an ordinary session passes the guard unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from tests.mcp_http import mcp_http_server
from tools.agents import TOOLS

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    # No tool call reaches PaliGemma here, so nothing needs to listen at the base URL.
    with mcp_http_server("http://127.0.0.1:9/v1", "--max-image-mb", "1") as (url, _):
        yield url


def _call(arguments: str) -> bytes:
    return (
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_text", "arguments": '
        + arguments
        + "}}"
    ).encode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param(
            _call('{"image": "x", "y": [' + "[]," * 200_000 + "[]]}"), 400, "more than 4,160 values", id="values"
        ),
        pytest.param(_call('{"image": ' + "[" * 100 + "]" * 100 + "}"), 400, "nest deeper than 20", id="depth"),
        pytest.param(_call('{"image": "' + "A" * 2_000_000 + '"}'), 413, "over 1,529,173 bytes", id="size"),
    ],
)
def test_hostile_messages_are_refused_before_the_sdk_parses_them(
    mcp_url: str, body: bytes, status: int, message: str
) -> None:
    started = time.monotonic()
    answer = httpx2.post(mcp_url, content=body, headers=HEADERS, timeout=30)
    assert answer.status_code == status
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == -32600 and message in error["message"]
    assert time.monotonic() - started < 2


def test_an_ordinary_session_passes_the_guard(mcp_url: str) -> None:
    async def session() -> list[str]:
        async with Client(mcp_url) as client:
            return [tool.name for tool in (await client.list_tools()).tools]

    assert anyio.run(session) == [tool.name for tool in TOOLS]
    assert json.loads(_call('{"image": "x"}'))["params"]["arguments"] == {"image": "x"}
