"""The chat app's handling of what a page or a raw API client sends it, without a server: uploads
over the size limit, texts too long to render, fields of the wrong type."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from clients.chat_app import ChatSession, _Handlers, _read_upload
from clients.chat_turns import MENU, SHOWN_MAX_CHARS, TYPED_MAX_CHARS, shown, user_text
from tools import ImageError, ImagePolicy, PaliGemmaClient

CLOSED = "http://127.0.0.1:9/v1"  # nothing listens: a test that reached the endpoint would fail


def test_an_upload_over_the_limit_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff" * (3 * 1024 * 1024 + 5))
    client = PaliGemmaClient(base_url=CLOSED, image_policy=ImagePolicy(max_bytes=2 * 1024 * 1024))
    with pytest.raises(ImageError, match=r"'big\.jpg' is 3\.0 MiB; the limit is 2 MiB\. Upload a smaller image"):
        _read_upload({"path": str(path), "orig_name": "big.jpg"}, client)


def test_long_texts_are_shown_cut_with_what_was_left_out() -> None:
    assert shown("a" * SHOWN_MAX_CHARS) == "a" * SHOWN_MAX_CHARS
    cut = shown("a" * (SHOWN_MAX_CHARS + 1234))
    assert cut.startswith("a" * SHOWN_MAX_CHARS) and "1,234 more characters" in cut
    assert len(user_text(MENU["Free prompt"], "en", "x" * 1_000_000)) < TYPED_MAX_CHARS + 200
    assert user_text(MENU["Free prompt"], "en", "   ") == "(an empty prompt)"


@pytest.mark.parametrize(
    ("payload", "task", "lang", "text"),
    [
        pytest.param(None, 3, "en", "", id="task-a-number"),
        pytest.param(None, {"x": 1}, "en", "", id="task-a-dict"),
        pytest.param(None, "Caption", ["en"], "", id="lang-a-list"),
        pytest.param(None, "Free prompt", "en", {"a": 1}, id="text-a-dict"),
        pytest.param({"path": 5}, "Caption", "en", "", id="upload-path-a-number"),
        pytest.param("file.png", "Caption", "en", "", id="upload-a-string"),
    ],
)
def test_fields_of_the_wrong_type_get_an_error_turn(payload: Any, task: Any, lang: Any, text: Any) -> None:
    handlers = _Handlers(PaliGemmaClient(base_url=CLOSED, max_retries=0))

    async def turns() -> list[Any]:
        return [outputs async for outputs in handlers.on_run(payload, task, lang, text, ChatSession())]

    (last,) = asyncio.run(turns())
    history, _, structured, raw = last
    assert "wrong types" in history[-1]["content"] and (structured, raw) == (None, "")


@pytest.mark.parametrize("payload", [{"path": 5}, "file.png", ["a"]], ids=["path-a-number", "a-string", "a-list"])
def test_an_upload_of_the_wrong_type_gets_an_error_turn(payload: Any) -> None:
    handlers = _Handlers(PaliGemmaClient(base_url=CLOSED, max_retries=0))
    session = ChatSession()
    history, kept = asyncio.run(handlers.on_image(payload, session))
    assert "wrong types" in history[-1]["content"] and kept.upload is None
