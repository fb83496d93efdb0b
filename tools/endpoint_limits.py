"""Bounds on one endpoint call: a total deadline (retries included) and a response size cap.

The OpenAI SDK's timeout is per read, so a server that trickles bytes, or answers 200 MB,
could hold a call for as long as it likes. httpx event hooks bound both: the request hook
lowers every timeout to what remains of the call's deadline (in the sync stack, asked again
at each socket read: `_Remaining`), the response hook wraps the body so reading stops at the
deadline or the size cap, whichever comes first.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2 as httpx  # the HTTP stack the OpenAI SDK here is built on

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a PaliGemma answer is a few kB; anything near this is not one

# (deadline on time.monotonic(), size cap) of the endpoint call running in this context, if any.
_LIMITS: contextvars.ContextVar[tuple[float, int] | None] = contextvars.ContextVar("endpoint_limits", default=None)


class ResponseTooLarge(Exception):
    """The endpoint's response passed the size cap (raised inside httpx, mapped by the client)."""


class CompressedAnswer(ResponseTooLarge):
    """The endpoint compressed its answer though it was asked not to: its size is unknown until decoded."""


class DeadlinePassed(Exception):
    """The call's total deadline passed while reading (raised inside httpx, mapped by the client)."""


def start_call(timeout_s: float, max_bytes: int) -> contextvars.Token[tuple[float, int] | None]:
    """Bound the calls made in this context from now; undo with `end_call(token)`."""
    return _LIMITS.set((time.monotonic() + timeout_s, max_bytes))


def end_call(token: contextvars.Token[tuple[float, int] | None]) -> None:
    _LIMITS.reset(token)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("the endpoint call's total time limit passed")
    return left


class _Remaining:
    """A socket timeout that is what remains of the call, asked again at every read and write.

    httpcore's sync backend gives each `socket.settimeout` the request's read timeout as it is,
    so a server trickling its headers a byte at a time, or flooding 1xx answers, never lets one
    read time out. `settimeout` takes an integer through `__index__`: this one answers the
    seconds left (rounded up) and raises TimeoutError, which httpcore maps to a read timeout,
    once the deadline has passed.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __index__(self) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the endpoint call's total time limit passed")
        return math.ceil(left)


def _bounded_timeouts(request: httpx.Request, *, per_read: bool) -> None:
    limits = _LIMITS.get()
    if limits is None:
        return
    left = _remaining(limits[0])
    timeouts = dict(request.extensions.get("timeout") or {})
    bounded: dict[str, Any] = {k: min(v, left) if v is not None else left for k, v in timeouts.items()} or {
        "connect": left,
        "read": left,
        "write": left,
        "pool": left,
    }
    if per_read:  # the sync stack: asyncio's own timeout bounds the async one
        bounded["read"] = bounded["write"] = _Remaining(limits[0])
    request.extensions["timeout"] = bounded


def _on_request(request: httpx.Request) -> None:
    _bounded_timeouts(request, per_read=True)


# Asked of the endpoint: the cap counts the bytes as they arrive, so they must be the answer's own.
REQUEST_HEADERS = {"Accept-Encoding": "identity"}


def _check_length(response: httpx.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"the endpoint announced {int(declared):,} bytes; the cap is {max_bytes:,}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # 600 MiB of zeros fit in a kilobyte of brotli: decoded, the cap on bytes read bounds nothing.
        raise CompressedAnswer(
            f"the endpoint sent a {encoding[:40]}-compressed answer although an uncompressed one was asked; "
            "its size is unknown until decoded, so it is not read"
        )


class _BoundedStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, deadline: float, max_bytes: int) -> None:
        self._inner, self._deadline, self._max_bytes = inner, deadline, max_bytes

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise ResponseTooLarge(f"the endpoint sent more than {self._max_bytes:,} bytes")
            _remaining(self._deadline)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncBoundedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, deadline: float, max_bytes: int) -> None:
        self._inner, self._deadline, self._max_bytes = inner, deadline, max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise ResponseTooLarge(f"the endpoint sent more than {self._max_bytes:,} bytes")
            _remaining(self._deadline)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _on_response(response: httpx.Response) -> None:
    limits = _LIMITS.get()
    if limits is not None:
        _check_length(response, limits[1])
        response.stream = _BoundedStream(response.stream, *limits)


async def _on_request_async(request: httpx.Request) -> None:
    _bounded_timeouts(request, per_read=False)


async def _on_response_async(response: httpx.Response) -> None:
    limits = _LIMITS.get()
    if limits is not None:
        _check_length(response, limits[1])
        response.stream = _AsyncBoundedStream(response.stream, *limits)


def sync_hooks() -> dict[str, list[Any]]:
    """`event_hooks=` for the SDK's httpx.Client."""
    return {"request": [_on_request], "response": [_on_response]}


def async_hooks() -> dict[str, list[Any]]:
    """`event_hooks=` for the SDK's httpx.AsyncClient."""
    return {"request": [_on_request_async], "response": [_on_response_async]}


def cause(error: BaseException) -> ResponseTooLarge | DeadlinePassed | None:
    """Our bound behind an SDK error (the SDK wraps what httpx raised), if one is."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ResponseTooLarge, DeadlinePassed)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
