"""The client's bounds against a hostile endpoint: a total deadline, not per read, and a cap on
the response size, for the sync and the async path."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import tools
from tests.images import gradient_image, png_bytes
from tests.tools.fake_endpoint import Behaviour, fake_endpoint
from tools.errors import EndpointRequestError, EndpointTimeoutError
from tools.images import encode_for_model, load_image

IMAGE = encode_for_model(load_image(png_bytes(gradient_image(8, 8))))


def complete(client: tools.PaliGemmaClient, asynchronous: bool) -> tools.Completion:
    if not asynchronous:
        return client.complete(IMAGE, "caption en", max_tokens=8)

    async def main() -> tools.Completion:
        try:
            return await client.acomplete(IMAGE, "caption en", max_tokens=8)
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("asynchronous", [pytest.param(False, id="sync"), pytest.param(True, id="async")])
@pytest.mark.parametrize(
    ("behaviour", "error", "message"),
    [
        pytest.param(Behaviour(extra_bytes=8 << 20), EndpointRequestError, "too much data", id="8-MB-answer"),
        pytest.param(Behaviour(trickle_s=0.05), EndpointTimeoutError, "did not answer in time", id="trickled-bytes"),
    ],
)
def test_hostile_endpoint_is_cut_off(
    behaviour: Behaviour, error: type[Exception], message: str, asynchronous: bool
) -> None:
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", timeout_s=1.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(error, match=message):
            complete(client, asynchronous)
        assert time.monotonic() - started < 5.0
        client.close()


@pytest.mark.parametrize("asynchronous", [pytest.param(False, id="sync"), pytest.param(True, id="async")])
def test_an_honest_answer_passes_the_bounds(asynchronous: bool) -> None:
    with fake_endpoint(Behaviour()) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", timeout_s=5, max_retries=0)
        assert complete(client, asynchronous).text.endswith(" cat")
        client.close()


def test_decoding_waits_for_a_concurrency_slot() -> None:
    client = tools.PaliGemmaClient(base_url="http://127.0.0.1:9/v1", model="fake", max_concurrency=1)
    released = threading.Event()
    order: list[str] = []

    def hold() -> None:
        with client.limit():
            released.wait(5)
            order.append("released")

    def call() -> None:
        with pytest.raises(tools.ImageError):  # refused only once decoding could start
            tools.locate_objects(b"not an image", "cat", client=client)
        order.append("decoded")

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    released.set()
    holder.join(5)
    caller.join(5)
    assert order == ["released", "decoded"]


def test_async_decoding_waits_for_a_slot_and_leaves_the_loop_free() -> None:
    client = tools.PaliGemmaClient(base_url="http://127.0.0.1:9/v1", model="fake", max_concurrency=1)
    order: list[str] = []

    async def hold() -> None:
        async with client.alimit():
            await asyncio.sleep(0.3)
            order.append("released")

    async def call() -> None:
        with pytest.raises(tools.ImageError):
            await tools.alocate_objects(b"not an image", "cat", client=client)
        order.append("decoded")

    async def main() -> None:
        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        await asyncio.gather(call(), holder)

    asyncio.run(main())
    assert order == ["released", "decoded"]


def _slow_header_server(stop: threading.Event) -> tuple[int, threading.Thread]:
    """A loopback server that answers every request with headers a byte every 0.2 s, or 1xx
    answers without end: each socket read gets data, so no per-read timeout ever fires."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)

    def answer(conn: socket.socket) -> None:
        try:
            request = conn.recv(1 << 20)
            if b"/v1/models" in request.split(b"\r\n", 1)[0]:
                while not stop.is_set():
                    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
                    time.sleep(0.01)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 10_000:
                if stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("model", [pytest.param("fake", id="headers-trickled"), pytest.param(None, id="1xx-flood")])
def test_the_sync_call_keeps_its_total_deadline_while_headers_never_end(model: str | None) -> None:
    stop = threading.Event()
    port, thread = _slow_header_server(stop)
    try:
        client = tools.PaliGemmaClient(base_url=f"http://127.0.0.1:{port}/v1", model=model, timeout_s=2, max_retries=0)
        started, cpu = time.monotonic(), time.process_time()
        with client, pytest.raises(EndpointTimeoutError):
            tools.read_text(gradient_image(32, 24), client=client)
        assert time.monotonic() - started < 5  # the deadline and at most a second of a last read
        assert time.process_time() - cpu < 2
    finally:
        stop.set()
        thread.join(timeout=5)
