"""The PaliGemma chat template, rendered the way vLLM renders it (transformers' Jinja env).

The served end-to-end tests check the token ids; these cover every decision of
docs/chat-template.md, including the two-image refusal that vLLM's own image limit
normally answers first.
"""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.exceptions import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

from server.vllm_command import chat_template_path

IMAGE = {"type": "image"}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def render(messages: list[dict[str, Any]]) -> str:
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=chat_template_path().read_text())
    return str(rendered[0])


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        pytest.param([{"role": "user", "content": [IMAGE, text("detect cat")]}], "detect cat", id="plain"),
        pytest.param(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [IMAGE, text("ocr")]}],
            "ocr",
            id="system-message-not-rendered",
        ),
        pytest.param(
            [
                {"role": "user", "content": [IMAGE, text("caption en")]},
                {"role": "assistant", "content": "a cat"},
                {"role": "user", "content": "  answer en what colour is it?  "},
            ],
            "answer en what colour is it?",
            id="earlier-turns-not-rendered-image-from-history-counts",
        ),
        pytest.param(
            [{"role": "user", "content": [text(" detect\n"), IMAGE, text(""), text("cat ;\r\ndog ")]}],
            "detect cat ; dog",
            id="text-parts-joined-newlines-become-spaces",
        ),
        pytest.param(
            [{"role": "developer", "content": "x"}, {"role": "user", "content": [IMAGE, text("segment car")]}],
            "segment car",
            id="developer-message-not-rendered",
        ),
    ],
)
def test_renders_exactly_the_paligemma_prompt(messages: list[dict[str, Any]], prompt: str) -> None:
    assert render(messages) == prompt


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        pytest.param([{"role": "user", "content": "detect cat"}], "needs one image", id="no-image"),
        pytest.param(
            [{"role": "user", "content": [IMAGE, text("a")]}, {"role": "user", "content": [IMAGE, text("b")]}],
            "carries 2",
            id="two-images",
        ),
        pytest.param([{"role": "user", "content": [IMAGE, text(" \n ")]}], "prompt is empty", id="empty-text"),
        pytest.param([{"role": "user", "content": [IMAGE]}], "prompt is empty", id="image-only"),
        pytest.param(
            [{"role": "user", "content": [IMAGE, text("ocr")]}, {"role": "assistant", "content": "x"}],
            "must be the user's",
            id="ends-with-assistant",
        ),
        pytest.param(
            [{"role": "user", "content": [IMAGE, text("ocr")]}, {"role": "tool", "content": "{}"}],
            "ends with a 'tool' message",
            id="ends-with-tool",
        ),
    ],
)
def test_refuses_with_a_message_the_client_sees(messages: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        render(messages)
