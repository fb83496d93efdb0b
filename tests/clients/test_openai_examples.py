"""The OpenAI-SDK examples, run as written against the served tiny model.

Random weights answer nonsense, but greedily: the same image and prompt give the same answer,
so each example is checked against the answer another way of asking gets.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import openai
import pytest

import tools
from clients import openai_examples
from tests.images import gradient_image
from tests.server_pool import TinyServer

pytestmark = pytest.mark.vllm


@pytest.fixture(autouse=True)
def endpoint(tiny_server: TinyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALIGEMMA_BASE_URL", tiny_server.base_url)
    monkeypatch.delenv("PALIGEMMA_MODEL", raising=False)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    gradient_image(200, 150).save(path)
    return path


@pytest.fixture
def image_url(photo: Path) -> Iterator[str]:
    """The photo on a loopback HTTP server, for the example where vLLM fetches the URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(photo.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{photo.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ask(image_url: str, prompt: str, max_tokens: int) -> str:
    with openai.OpenAI(base_url=openai_examples.base_url(), api_key=openai_examples.api_key()) as client:
        reply = client.chat.completions.create(
            model=openai_examples.model_name(client),
            messages=openai_examples.image_message(image_url, prompt),
            max_tokens=max_tokens,
            temperature=0,
        )
    return reply.choices[0].message.content or ""


def test_caption_by_url_sees_the_image_the_url_names(image_url: str, photo: Path) -> None:
    by_url = openai_examples.caption_by_url(image_url)
    assert by_url and by_url == ask(openai_examples.data_uri(photo), "caption en", 64)  # vLLM fetched the photo


def test_detect_in_file_by_base64_is_what_the_tools_send(photo: Path, tiny_server: TinyServer) -> None:
    answer = openai_examples.detect_in_file(photo, "cat")
    with tools.PaliGemmaClient(base_url=tiny_server.base_url, max_retries=0) as client:
        typed = tools.locate_objects(photo, "cat", client=client)  # the same file, prompt `detect cat`
    # The example's budget is 128 tokens, the tool's 256: the same greedy answer, perhaps cut shorter.
    assert answer and typed.raw_text.startswith(answer)


def test_streaming_equals_the_unstreamed_answer(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    streamed = openai_examples.describe_streaming(photo)
    assert capsys.readouterr().out.strip() == streamed.strip()  # printed as it arrived
    assert streamed == ask(openai_examples.data_uri(photo), "describe en", 128)


def test_many_images_with_the_async_client(photo: Path) -> None:
    captions = asyncio.run(openai_examples.caption_many([photo] * 6, concurrency=3))
    assert len(captions) == 6 and len(set(captions)) == 1  # the same image, greedy: the same caption
