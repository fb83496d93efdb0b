"""The never-raise promise at the other agent-facing entry points: the MCP server (a real in-memory
client session), the LangChain tools and the OpenAI Agents SDK tools, invoked their own way.

Hostile arguments get a result an LLM can act on, and no request reaches the endpoint (a local
stand-in that counts requests). No model is needed: nothing may get that far. What each costs in CPU
time is measured by benchmarks/budgets.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest
from agents import FunctionTool, RunContextWrapper
from agents.tool_context import ToolContext
from langchain_core.messages import ToolMessage
from mcp import Client

import tools
from tests.images import gradient_image
from tests.tools.conftest import run
from tests.tools.fake_endpoint import Behaviour, fake_endpoint
from tools.agents import McpSettings, agents_sdk_tools, build_server, langchain_tools
from tools.image_store import ImageStore


def nested(depth: int) -> Any:
    value: Any = "img_1"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_ARGUMENTS = [
    pytest.param("read_text", {"image": nested(200)}, id="200-deep-image"),  # deeper: the MCP client cannot send it
    pytest.param("read_text", {"image": 10**4000}, id="4000-digit-number"),
    pytest.param("locate_objects", {"image": "img_1", "objects": ";".join(["x"] * 100_000)}, id="100000-names"),
    pytest.param("locate_objects", {"image": "img_1", "objects": ["y"] * 100_000}, id="100000-list-names"),
    pytest.param("read_text", {"image": "img_1" + "\0" * 10}, id="nul-in-handle"),
    pytest.param("read_text", {"image": "img_9"}, id="unknown-handle"),
    pytest.param("read_text", {"image": "/etc/passwd"}, id="local-path"),
    pytest.param("read_text", {"image": "http://169.254.169.254/latest/meta-data/"}, id="metadata-url"),
    pytest.param("answer_visual_question", {"image": "img_1", "question": "<image>" * 10_000}, id="tag-flood"),
    pytest.param("answer_visual_question", {"image": "img_1", "question": "[multimodal] hi"}, id="special-token"),
    pytest.param("locate_objects", {"image": "img_1", "objects": ["<loc0001>"]}, id="loc-token-name"),
]


def store() -> ImageStore:
    images = ImageStore()
    assert images.add(gradient_image(64, 48)) == "img_1"
    return images


def no_request(behaviour: Behaviour) -> None:
    assert [r for r in behaviour.requests if r.endswith("/chat/completions")] == []


@pytest.mark.parametrize(
    ("name", "arguments"),
    [*HOSTILE_ARGUMENTS, pytest.param("count_sheep", {"image": "img_1"}, id="unknown-tool")],
)
def test_mcp_session_gets_an_error_result(name: str, arguments: dict[str, Any]) -> None:
    behaviour = Behaviour()
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)
        server = build_server(McpSettings(), client)

        async def call() -> Any:
            async with client, Client(server) as session:
                return await session.call_tool(name, arguments)

        result = anyio.run(call)
        no_request(behaviour)
    assert result.is_error, result.content
    assert result.content and result.content[0].text


@pytest.mark.parametrize(("name", "arguments"), HOSTILE_ARGUMENTS)
def test_langchain_tool_gets_an_error_message(name: str, arguments: dict[str, Any]) -> None:
    behaviour = Behaviour()
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)
        by_name = {t.name: t for t in langchain_tools(client=client, images=store())}
        tool = by_name[name]
        with client:
            message = tool.invoke({"type": "tool_call", "id": "call_1", "name": name, "args": arguments})
        no_request(behaviour)
    assert isinstance(message, ToolMessage)
    assert "error" in json.loads(message.content if isinstance(message.content, str) else json.dumps(message.content))


@pytest.mark.parametrize("asynchronous", [pytest.param(False, id="invoke"), pytest.param(True, id="ainvoke")])
@pytest.mark.parametrize(
    ("given", "tool_message"),
    [
        pytest.param({"type": "tool_call", "id": "c", "name": "read_text", "args": None}, True, id="args-none"),
        pytest.param({"type": "tool_call", "id": "c", "name": "read_text", "args": "img_1"}, True, id="args-string"),
        pytest.param({"type": "tool_call", "id": "c", "name": "read_text", "args": 1.5}, True, id="args-number"),
        pytest.param({"type": "tool_call", "name": "read_text", "args": {"image": "img_1"}}, True, id="no-id"),
        pytest.param(None, False, id="none"),
        pytest.param(7, False, id="a-number"),
    ],
)
def test_langchain_tool_answers_input_langchain_cannot_read(given: Any, tool_message: bool, asynchronous: bool) -> None:
    behaviour = Behaviour()
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)
        tool = {t.name: t for t in langchain_tools(client=client, images=store())}["read_text"]

        async def ainvoke() -> Any:
            async with client:
                return await tool.ainvoke(given)

        if asynchronous:
            answer = anyio.run(ainvoke)
        else:
            with client:
                answer = tool.invoke(given)
        no_request(behaviour)
    if tool_message:
        assert isinstance(answer, ToolMessage) and answer.status == "error"
        answer = answer.content
    assert re.search("could not be read|invalid arguments", json.loads(answer)["error"])


@pytest.mark.parametrize(("name", "arguments"), HOSTILE_ARGUMENTS)
def test_agents_sdk_tool_gets_an_error_output(name: str, arguments: dict[str, Any]) -> None:
    behaviour = Behaviour()
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)
        by_name: dict[str, FunctionTool] = {t.name: t for t in agents_sdk_tools(client=client, images=store())}
        tool = by_name[name]
        text = (
            json.dumps(arguments)
            if not isinstance(arguments.get("image"), list)
            else '{"image": ' + "[" * 100_000 + "]" * 100_000 + "}"
        )
        context = ToolContext.from_agent_context(
            RunContextWrapper(context=None), "call_1", tool_name=name, tool_arguments=text
        )
        output = run(tool.on_invoke_tool(context, text), client)
        no_request(behaviour)
    rendered = output if isinstance(output, str) else json.dumps(output, default=str)
    assert "error" in rendered.lower()
