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
from openai.types.chat import ChatCompletion

import tools
from clients.agent import run_agent
from tests.images import data_uri, gradient_image, png_bytes
from tests.server_pool import TinyServer
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


def test_agent_loop_gives_up_after_its_steps(llm: openai.OpenAI, tiny_server: TinyServer) -> None:
    """One step, spent on the named tool call: the loop says so and returns no answer."""
    said: list[str] = []
    with tools.PaliGemmaClient(base_url=tiny_server.base_url, max_retries=0) as paligemma:
        answer = run_agent(
            "Describe the image.",
            data_uri(gradient_image()),
            llm=llm,
            llm_model=tiny_server.model,
            paligemma=paligemma,
            max_steps=1,
            first_tool="caption_image",
            llm_extra_body={"chat_template": AGENT_TEMPLATE, "max_tokens": 200, "temperature": 0},
            say=said.append,
        )
    assert said[0].startswith("tool call: caption_image(")
    assert said[1].startswith('  -> {"image_width":300')  # the dispatcher's compact JSON
    assert said[2:] == ["no answer after 1 steps"] and answer == ""


class ScriptedLLM:
    """An agent LLM that calls caption_image on its first turn and answers in words on its second."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.chat = self
        self.completions = self

    def create(self, **request: Any) -> ChatCompletion:
        self.requests.append({**request, "messages": list(request["messages"])})  # as sent, not as grown later
        if len(self.requests) == 1:
            arguments = json.dumps({"image": "img_1", "detail": None, "lang": None})
            call = {"id": "call_1", "type": "function", "function": {"name": "caption_image", "arguments": arguments}}
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "It is a colour gradient."}
        return ChatCompletion.model_validate(
            {
                "id": f"reply-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            }
        )


def test_agent_loop_answers_once_the_llm_stops_calling_tools(tiny_server: TinyServer) -> None:
    llm, said = ScriptedLLM(), list[str]()
    forced = {"structured_outputs": {"choice": ["a gradient"]}}
    with tools.PaliGemmaClient(base_url=tiny_server.base_url, max_retries=0, extra_body=forced) as paligemma:
        answer = run_agent(
            "Describe the image.", data_uri(gradient_image()), llm=llm, llm_model="m", paligemma=paligemma,
            say=said.append,
        )  # fmt: skip
    assert answer == "It is a colour gradient." and said[-1] == "answer: It is a colour gradient."
    assert said[0] == 'tool call: caption_image({"image": "img_1", "detail": null, "lang": null})'
    tool_message = llm.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"])["caption"] == "a gradient"  # PaliGemma's answer reached the LLM
    assert [t["function"]["name"] for t in llm.requests[0]["tools"]] == [t.name for t in tools.TASKS]


def test_the_command_passes_first_tool_to_the_loop(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m clients.agent --first-tool caption_image` names that tool in the first request
    (it was parsed and then dropped)."""
    import http.server
    import threading

    from clients.agent import main

    seen: list[dict[str, Any]] = []

    class LLM(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "done"}}],
            }).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        argv = ["Describe it.", "--image", data_uri(gradient_image()), "--llm-base-url", base_url, "--llm-model", "m"]
        assert main([*argv, "--first-tool", "caption_image"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "caption_image"}}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"answer": "done"}
