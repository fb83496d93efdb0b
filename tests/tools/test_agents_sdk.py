"""OpenAI Agents SDK adapter: FunctionTools over the dispatcher, run by the SDK itself, never raising."""

from __future__ import annotations

import base64
import io
import json
import sys
from typing import Any

import pytest
from agents import Agent, FunctionTool, RunConfig, RunContextWrapper, Runner, ToolOutputImage, ToolOutputText
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool_context import ToolContext
from PIL import Image

import tools
from tests.tools.conftest import DETECTION_BOXES, LOCATE_IMG_1, run
from tools.agents import TOOLS, agents_sdk_tools, openai_tools
from tools.image_store import ImageStore

pytestmark = pytest.mark.vllm


def by_name(function_tools: list[FunctionTool]) -> dict[str, FunctionTool]:
    return {tool.name: tool for tool in function_tools}


def invoke(tool: FunctionTool, arguments: Any, client: tools.PaliGemmaClient, call_id: str = "call_1") -> Any:
    """Call the tool as the SDK's run loop does: a ToolContext derived from the run's context wrapper."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    context = ToolContext.from_agent_context(
        RunContextWrapper(context=None), call_id, tool_name=tool.name, tool_arguments=text
    )
    return run(tool.on_invoke_tool(context, text), client)


def decode_png(data_url: str) -> Image.Image:
    header, encoded = data_url.split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_one_function_tool_per_tool_with_the_openai_schema() -> None:
    definitions = {d["function"]["name"]: d["function"] for d in openai_tools()}
    function_tools = agents_sdk_tools()
    assert [t.name for t in function_tools] == [spec.name for spec in TOOLS]
    for tool in function_tools:
        assert tool.description == definitions[tool.name]["description"]
        assert tool.params_json_schema == definitions[tool.name]["parameters"]
        assert tool.strict_json_schema is True


def test_locate_objects_returns_boxes_and_the_annotated_image(
    forced_client: tools.PaliGemmaClient, images: ImageStore
) -> None:
    tool = by_name(agents_sdk_tools(client=forced_client, images=images))["locate_objects"]
    text, picture = invoke(tool, LOCATE_IMG_1, forced_client)
    assert isinstance(text, ToolOutputText) and isinstance(picture, ToolOutputImage)
    payload = json.loads(text.text)
    assert payload["image_width"] == 300 and payload["image_height"] == 200
    assert [o["label"] for o in payload["objects"]] == ["cat", "dog"]
    assert [o["box"] for o in payload["objects"]] == DETECTION_BOXES
    assert picture.image_url is not None
    drawn = decode_png(picture.image_url)
    assert drawn.width == 300 and drawn.height > 200  # the legend band below


def test_without_annotated_image_the_output_is_the_json_text(
    forced_client: tools.PaliGemmaClient, images: ImageStore
) -> None:
    tool = by_name(agents_sdk_tools(client=forced_client, images=images, annotated_image=False))["locate_objects"]
    output = invoke(tool, LOCATE_IMG_1, forced_client)
    assert isinstance(output, str)
    assert [o["box"] for o in json.loads(output)["objects"]] == DETECTION_BOXES


def test_a_run_sends_the_boxes_and_the_picture_back_to_the_model(
    forced_client: tools.PaliGemmaClient, images: ImageStore
) -> None:
    # A scripted model (the SDK's own test double) calls the tool, then answers: no LLM, no network.
    model = ScriptedModel(
        [[function_call("locate_objects", LOCATE_IMG_1, call_id="call_7")], [assistant_message("A cat and a dog.")]]
    )
    # `[*...]`: Agent wants list[Tool], and list is invariant
    agent = Agent(name="vision", model=model, tools=[*agents_sdk_tools(client=forced_client, images=images)])
    result = run(Runner.run(agent, "Where are the pets?", run_config=RunConfig(tracing_disabled=True)), forced_client)
    assert result.final_output == "A cat and a dog."
    model.assert_complete()
    second_call = model.calls[1]
    (item,) = [i for i in second_call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert item["call_id"] == "call_7"
    text, picture = item["output"]
    assert text["type"] == "input_text" and [o["box"] for o in json.loads(text["text"])["objects"]] == DETECTION_BOXES
    assert picture["type"] == "input_image" and decode_png(picture["image_url"]).width == 300


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        pytest.param("read_text", {"image": "img_9"}, "no image with handle 'img_9'", id="unknown-handle"),
        pytest.param("read_text", {"image": "/etc/passwd"}, "named by its handle", id="local-file"),
        pytest.param("read_text", "{not json", "not valid JSON", id="bad-json"),
        pytest.param("locate_objects", {"image": "img_1", "objects": []}, "at least 1 item", id="no-objects"),
    ],
)
def test_mistakes_come_back_as_output_text(name: str, arguments: Any, message: str, images: ImageStore) -> None:
    unreachable = tools.PaliGemmaClient(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0)
    output = invoke(by_name(agents_sdk_tools(client=unreachable, images=images))[name], arguments, unreachable)
    assert isinstance(output, str)
    payload = json.loads(output)
    assert message in payload["error"] and payload["tool"] == name


def test_endpoint_down_is_output_text_not_an_exception(images: ImageStore) -> None:
    down = tools.PaliGemmaClient(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=5)
    output = invoke(by_name(agents_sdk_tools(client=down, images=images))["read_text"], {"image": "img_1"}, down)
    assert "Is the server running" in json.loads(output)["error"]


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "agents", None)  # what `import agents` meets when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'paligemma-tools\[agents\]'"):
        agents_sdk_tools()
