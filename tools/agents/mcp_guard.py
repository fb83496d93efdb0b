"""The MCP HTTP transport's guard: a message too large, too deep or of too many values is
refused before the MCP SDK parses it (millions of `[]` cost its parser seconds and gigabytes
before any tool code could refuse them; docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tools.agents.dispatch import MAX_JSON_DEPTH, MAX_JSON_VALUES, shape_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a JSON-RPC `tools/call` adds around the arguments: {"params": {"arguments": {...}}} and
# a few fields beside them.
ENVELOPE_DEPTH = 4
ENVELOPE_VALUES = 64


class MessageGuard:
    """ASGI middleware: POST bodies over `max_bytes`, nested deeper or holding more values than a
    tool call can, answered with a JSON-RPC error (HTTP 413 or 400); everything else passes."""

    def __init__(self, app: App, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, f"the message is over {self.max_bytes:,} bytes; name images by URL or path.")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        text = body.decode("utf-8", errors="replace")
        if problem := shape_problem(text, MAX_JSON_DEPTH + ENVELOPE_DEPTH, MAX_JSON_VALUES + ENVELOPE_VALUES):
            await _refuse(send, 400, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": reason}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
