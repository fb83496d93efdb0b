"""Endpoint faults against the real tiny server: 5xx and 429 retried with backoff, 4xx not,
slow answers cut by the timeout, the concurrency limit held, and a server killed in the
middle of a batch, and the batch resumed against a live one with nothing lost or done twice."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import tools
from tests.fault_proxy import Fault, FaultProxy
from tests.images import gradient_image
from tests.server_pool import ServerPool, TinyServer

pytestmark = pytest.mark.vllm
ANSWER = "<loc0100><loc0200><loc0300><loc0400> cat"
FORCED = {"structured_outputs": {"choice": [ANSWER]}}


@pytest.fixture
def proxy(tiny_server: TinyServer) -> Iterator[FaultProxy]:
    running = FaultProxy(tiny_server.base_url.removesuffix("/v1")).start()
    try:
        yield running
    finally:
        running.stop()


def client(proxy: FaultProxy, **options: object) -> tools.PaliGemmaClient:
    settings: dict[str, object] = {"base_url": proxy.base_url, "extra_body": FORCED, "max_retries": 2, **options}
    return tools.PaliGemmaClient(**settings)  # type: ignore[arg-type]


def test_503_and_429_are_retried_then_succeed(proxy: FaultProxy) -> None:
    proxy.fail_next(Fault(status=503), Fault(status=429))
    with client(proxy) as c:
        result = tools.locate_objects(gradient_image(), "cat", client=c)
    assert [o.label for o in result.objects] == ["cat"]
    assert proxy.completions == 3


def test_persistent_5xx_ends_in_a_clear_error_after_bounded_retries(proxy: FaultProxy) -> None:
    proxy.fail_next(*[Fault(status=502)] * 3)
    with client(proxy) as c, pytest.raises(tools.EndpointUnavailableError, match=r"kept failing \(HTTP 502"):
        tools.read_text(gradient_image(), client=c)
    assert proxy.completions == 3  # the first try and two retries, no more


def test_client_errors_are_not_retried(proxy: FaultProxy) -> None:
    proxy.fail_next(Fault(status=400))
    with client(proxy) as c, pytest.raises(tools.EndpointRequestError, match="HTTP 400"):
        tools.read_text(gradient_image(), client=c)
    assert proxy.completions == 1


def test_a_slow_answer_is_cut_off_by_the_timeout(proxy: FaultProxy) -> None:
    proxy.fail_next(Fault(delay_s=4.0))
    started = time.monotonic()
    with client(proxy, timeout_s=1.0, max_retries=0) as c, pytest.raises(tools.EndpointTimeoutError, match="in time"):
        tools.caption_image(gradient_image(), client=c)
    assert time.monotonic() - started < 3.5


def test_async_concurrency_limit_holds_at_the_server(proxy: FaultProxy) -> None:
    async def many() -> list[tools.Detections]:
        async with client(proxy, max_concurrency=3) as c:
            return await asyncio.gather(
                *(tools.alocate_objects(gradient_image(seed=i), "cat", client=c) for i in range(24))
            )

    results = asyncio.run(many())
    assert len(results) == 24 and all(r.objects for r in results)
    assert proxy.max_in_flight == 3


def test_sync_concurrency_limit_holds_across_threads(proxy: FaultProxy) -> None:
    with client(proxy, max_concurrency=2) as c, concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: tools.locate_objects(gradient_image(seed=i), "cat", client=c), range(16)))
    assert len(results) == 16
    assert proxy.max_in_flight == 2


def test_server_killed_mid_batch_then_resumed_against_a_live_one(
    server_pool: ServerPool, doomed_server: TinyServer, tiny_server: TinyServer, tmp_path: Path
) -> None:
    """The batch command line through a proxy to a server that is killed (its whole process group)
    in the middle of the batch; the same command, run again once a server answers at that address
    (the proxy now forwards to another live one), does what is left and nothing twice."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(30):
        gradient_image(80 + i, 60, seed=i).save(folder / f"{i:02d}.png")
    output = tmp_path / "out.jsonl"
    proxy = FaultProxy(doomed_server.base_url.removesuffix("/v1")).start()
    command = [
        sys.executable, "-m", "clients.cli", "detect", str(folder), "--objects", "cat", "-o", str(output),
        "--base-url", proxy.base_url, "--extra-body", json.dumps(FORCED), "--concurrency", "2", "--no-progress",
        "--timeout", "10",
    ]  # fmt: skip
    try:
        batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600  # a loaded machine answers slowly; a quiet one takes seconds
        while time.monotonic() < deadline and (not output.exists() or len(output.read_text().splitlines()) < 5):
            time.sleep(0.05)
        server_pool.stop("doomed_server")  # every process of it, in the middle of the batch
        assert not psutil.pid_exists(doomed_server.pid)
        _, stderr = batch.communicate(timeout=300)
        assert batch.returncode == 1, stderr
        first = [json.loads(line) for line in output.read_text().splitlines()]
        done_first = {r["path"] for r in first if r["ok"]}
        failed = [r for r in first if not r["ok"]]
        assert 5 <= len(done_first) < 30 and failed
        # a request cut off by the kill fails as unavailable, or as timed out when the client's
        # deadline passes before the dying server drops the connection: either is marked for retry
        gone = {"EndpointUnavailableError", "EndpointTimeoutError"}
        assert all(r["retry"] and r["error_type"] in gone for r in failed), failed

        proxy.reset_counts()
        proxy.upstream = tiny_server.base_url.removesuffix("/v1")  # a server answers at the address again
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        final = [json.loads(line) for line in output.read_text().splitlines()]
        assert sorted(r["path"] for r in final) == sorted(str(p.resolve()) for p in folder.glob("*.png"))
        assert all(r["ok"] for r in final)
        assert proxy.completions == 30 - len(done_first)  # nothing done twice
    finally:
        proxy.stop()
