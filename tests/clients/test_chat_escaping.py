"""Model text in the chat app renders as text: no Markdown, no HTML, whatever the model wrote.

Rendered with markdown-it-py (CommonMark, as Gradio's Chatbot parses it); no server needed."""

from __future__ import annotations

import re

import markdown_it
import pytest

from clients.chat_turns import code_span, describe_objects, escape_markdown
from tools import parse_detections

HOSTILE_TEXT = [
    pytest.param("a\n\n![x](http://evil.example/p.png)", id="blank-line-then-image"),
    pytest.param("a\r\n\r\n<img src=http://evil.example/p.png>", id="crlf-blank-line-then-html"),
    pytest.param("a\u2028\u2028<script>alert(1)</script>", id="unicode-line-separators"),
    pytest.param("`` ` ``\n\n[link](javascript:alert(1))", id="backticks-and-link"),
    pytest.param("x\n    \n# heading\n<iframe src=//evil.example>", id="whitespace-only-line"),
    pytest.param("<loc0001>\f\f**bold**", id="form-feeds"),
]


def rendered(markdown: str) -> str:
    return str(markdown_it.MarkdownIt("commonmark").render(markdown))


def assert_inert(html: str) -> None:
    assert not re.search(r"<(img|script|iframe|a|h1|strong|em)\b", html), html


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_code_span_stays_one_inert_span(text: str) -> None:
    html = rendered(f"Raw: {code_span(text)}")
    assert_inert(html)
    assert html.count("<code>") == 1 and html.count("<p>") == 1


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_escaped_text_renders_as_text(text: str) -> None:
    assert_inert(rendered(escape_markdown(text)))


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_object_lists_render_as_text(text: str) -> None:
    result = parse_detections(f"<loc0100><loc0100><loc0200><loc0200> {text} ; {text}", width=100, height=100)
    assert_inert(rendered(describe_objects(result)).replace("<strong>", ""))
