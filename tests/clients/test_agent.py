"""An agent round trip on real parts: the tiny vLLM server plays the agent LLM and PaliGemma.

vLLM's named function calling constrains the LLM's output to the tool's JSON schema, so
even random weights produce a schema-valid call; the dispatcher runs it against the same
server as PaliGemma, and the result goes back into a second completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import tools
from clients.agent import run_agent
from tests.conftest import TinyServer
from tests.images import gradient_image, png_bytes
from tools.agents import openai_tools, run_tool_call
from tools.image_store import ImageStore

pytestmark = pytest.mark.vllm

# A plain chat template for the agent role (the served PaliGemma template renders one task prompt).
AGENT_TEMPLATE = (
    "{%- for m in messages -%}{{ m['role'] }}:"
    "{%- if m['content'] is string %} {{ m['content'] }}"
    "{%- elif m['content'] %}{% for p in m['content'] %}{% if p['type'] == 'text' %} {{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor -%}assistant:"
)


@pytest.fixture(scope="module")
def llm(tiny_server: TinyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=tiny_server.base_url, api_key="EMPTY", max_retries=0) as client:
        yield client


def test_named_tool_call_dispatch_and_second_completion(llm: openai.OpenAI, tiny_server: TinyServer) -> None:
    images = ImageStore()
    handle = images.add(png_bytes(gradient_image(300, 200)))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"You use vision tools. {images.describe()}"},
        {"role": "user", "content": f"What does the sign in {handle} say?"},
    ]
    available = openai_tools(image_handles=images.handles)
    first = llm.chat.completions.create(
        model=tiny_server.model,
        messages=messages,  # type: ignore[arg-type]
        tools=available,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "read_text"}},
        max_tokens=200,
        temperature=0,
        extra_body={"chat_template": AGENT_TEMPLATE},
    ).choices[0]
    (call,) = first.message.tool_calls or []
    assert call.function.name == "read_text"
    assert json.loads(call.function.arguments) == {"image": "img_1"}  # schema-valid: the only allowed value

    with tools.PaliGemmaClient(base_url=tiny_server.base_url, max_retries=0) as paligemma:
        output = run_tool_call(call, client=paligemma, images=images)
    assert output.outcome.error is None
    assert isinstance(output.outcome.result, tools.TextResult)
    assert output.outcome.payload["prompt"] == "ocr" and output.outcome.payload["image_width"] == 300

    messages += [first.message.model_dump(exclude_none=True), *output.messages]
    second = llm.chat.completions.create(
        model=tiny_server.model,
        messages=messages,  # type: ignore[arg-type]
        tools=available,  # type: ignore[arg-type]
        tool_choice="none",
        max_tokens=4,
        extra_body={"chat_template": AGENT_TEMPLATE, "return_token_ids": True},
    )
    prompt_ids = (second.model_extra or {})["prompt_token_ids"]
    assert output.outcome.text in llm_decode(tiny_server, prompt_ids)  # the tool result reached the LLM


def llm_decode(tiny_server: TinyServer, ids: list[int]) -> str:
    from transformers import AutoTokenizer

    text: str = AutoTokenizer.from_pretrained(tiny_server.model_dir).decode(ids)
    return text


def test_agent_loop_prints_calls_and_answers(llm: openai.OpenAI, tiny_server: TinyServer) -> None:
    said: list[str] = []
    with tools.PaliGemmaClient(base_url=tiny_server.base_url, max_retries=0) as paligemma:
        answer = run_agent(
            "Describe the image.",
            "data:image/png;base64," + __import__("base64").b64encode(png_bytes(gradient_image())).decode(),
            llm=llm,
            llm_model=tiny_server.model,
            paligemma=paligemma,
            max_steps=3,
            first_tool="caption_image",
            llm_extra_body={"chat_template": AGENT_TEMPLATE, "max_tokens": 200, "temperature": 0},
            say=said.append,
        )
    assert said[0].startswith("tool call: caption_image(")
    assert said[1].startswith('  -> {"image_width":300')  # the dispatcher's compact JSON
    assert any(line.startswith("answer:") for line in said) or said[-1].startswith("no answer after")
    assert isinstance(answer, str)
