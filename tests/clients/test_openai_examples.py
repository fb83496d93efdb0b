"""The OpenAI-SDK examples, run as written against the served tiny model."""

from __future__ import annotations

import asyncio
import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import openai
import pytest

from clients import openai_examples
from tests.conftest import TinyServer
from tests.images import gradient_image

pytestmark = pytest.mark.vllm
TOKENS_OR_TEXT = re.compile(r".+", re.S)


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


def test_caption_by_url(image_url: str) -> None:
    assert TOKENS_OR_TEXT.fullmatch(openai_examples.caption_by_url(image_url))


def test_detect_in_file_by_base64(photo: Path) -> None:
    assert openai_examples.detect_in_file(photo, "cat") != ""


def test_streaming_equals_the_unstreamed_answer(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    streamed = openai_examples.describe_streaming(photo)
    assert capsys.readouterr().out.strip() == streamed.strip()  # printed as it arrived
    client = openai.OpenAI(base_url=openai_examples.base_url(), api_key=openai_examples.api_key())
    whole = client.chat.completions.create(
        model=openai_examples.model_name(client),
        messages=openai_examples.image_message(openai_examples.data_uri(photo), "describe en"),  # type: ignore[arg-type]
        max_tokens=128,
        temperature=0,
    )
    client.close()
    assert streamed == whole.choices[0].message.content


def test_many_images_with_the_async_client(photo: Path) -> None:
    captions = asyncio.run(openai_examples.caption_many([photo] * 6, concurrency=3))
    assert len(captions) == 6 and len(set(captions)) == 1  # the same image, greedy: the same caption
