"""The engine-packing middleware: which engine a request goes to, and its count of requests in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.engine_packing import ENGINES_ENV, PACK_ENV, PackedEngines, choose_engine


@pytest.mark.parametrize(
    ("in_flight", "pack", "expected"),
    [
        ([0, 0], 4, 0),  # idle: the first engine
        ([3, 0], 4, 0),  # filling the first
        ([4, 0], 4, 1),  # the first full: the next
        ([4, 3], 4, 1),
        ([4, 4], 4, 0),  # all full: the least loaded, lowest first
        ([5, 4], 4, 1),
        ([6, 9, 6], 4, 0),
        ([1, 0], 1, 1),  # pack 1: one request per engine before any gets a second
        ([0], 4, 0),
    ],
)
def test_choose_engine(in_flight: list[int], pack: int, expected: int) -> None:
    assert choose_engine(in_flight, pack) == expected


class Recorder:
    """An ASGI app that records the rank header of each request and waits until released."""

    def __init__(self) -> None:
        self.ranks: list[bytes | None] = []
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", ()))
        self.ranks.append(headers.get(b"x-data-parallel-rank"))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the app failed")


def request(path: str = "/v1/chat/completions", method: str = "POST", headers: Any = ()) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": list(headers)}


async def nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def ignore(message: Any) -> None:
    return None


def packed(monkeypatch: pytest.MonkeyPatch, engines: int, pack: int) -> tuple[PackedEngines, Recorder]:
    monkeypatch.setenv(ENGINES_ENV, str(engines))
    monkeypatch.setenv(PACK_ENV, str(pack))
    app = Recorder()
    return PackedEngines(app), app


def test_requests_fill_the_first_engine_then_share(monkeypatch: pytest.MonkeyPatch) -> None:
    middleware, app = packed(monkeypatch, engines=2, pack=2)

    async def run() -> list[int]:
        calls = [asyncio.create_task(middleware(request(), nothing, ignore)) for _ in range(6)]
        await asyncio.sleep(0)
        during = list(middleware.in_flight)
        app.release.set()
        await asyncio.gather(*calls)
        return during

    assert asyncio.run(run()) == [3, 3]
    assert app.ranks == [b"0", b"0", b"1", b"1", b"0", b"1"]
    assert middleware.in_flight == [0, 0]


def test_a_failed_request_leaves_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    middleware, app = packed(monkeypatch, engines=2, pack=4)
    app.fail = True
    app.release.set()
    with pytest.raises(RuntimeError):
        asyncio.run(middleware(request(), nothing, ignore))
    assert middleware.in_flight == [0, 0]


def test_a_client_cannot_pick_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    middleware, app = packed(monkeypatch, engines=2, pack=4)
    app.release.set()
    asyncio.run(middleware(request(headers=[(b"X-Data-Parallel-Rank", b"1")]), nothing, ignore))
    assert app.ranks == [b"0"]


@pytest.mark.parametrize(
    ("scope", "engines"),
    [
        (request(path="/v1/models", method="GET"), 2),
        (request(path="/health", method="GET"), 2),
        (request(method="GET"), 2),
        ({"type": "lifespan"}, 2),
        (request(), 1),  # one engine: nothing to choose
    ],
)
def test_other_requests_pass_untouched(monkeypatch: pytest.MonkeyPatch, scope: dict[str, Any], engines: int) -> None:
    middleware, app = packed(monkeypatch, engines=engines, pack=4)
    app.release.set()
    asyncio.run(middleware(scope, nothing, ignore))
    assert app.ranks == [None]
    assert middleware.in_flight == [0] * engines


@pytest.mark.parametrize("value", ["abc", "0", "-2", ""])
def test_a_bad_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PACK_ENV, value)
    with pytest.raises(ValueError, match=f"{PACK_ENV} must be a whole number of at least 1"):
        PackedEngines(Recorder())
