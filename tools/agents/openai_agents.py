"""The tools as OpenAI Agents SDK function tools (`pip install 'paligemma-tools[agents]'`).

A thin layer over the dispatcher: the SDK hands over the LLM's JSON arguments, `arun_tool`
validates and runs them, and the compact JSON comes back as the tool output. For boxes and
masks the output also carries the annotated PNG as a `ToolOutputImage` (Responses models see
it; the SDK's Chat Completions converter keeps the text only). Failures are output text,
never exceptions in the run loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tools.agents.dispatch import arun_tool
from tools.agents.schemas import TOOLS, AgentTool
from tools.client import PaliGemmaClient
from tools.image_policy import ImagePolicy
from tools.image_store import ImageStore
from tools.images import data_uri

if TYPE_CHECKING:
    from agents import Tool, ToolOutputImage, ToolOutputText
    from agents.tool_context import ToolContext

INSTALL_HINT = "pip install 'paligemma-tools[agents]'"


def agents_sdk_tools(
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    allow_references: bool = False,
    annotated_image: bool = True,
) -> list[Tool]:
    """One `agents.FunctionTool` per tool, with the strict schema of its pydantic arguments.

    `images` resolves handles such as 'img_1'; `policy` governs URLs and paths the LLM names
    (default `ImagePolicy.for_agents()`: no local files); with `images`, only its
    handles name images unless `allow_references` lets URLs, data URIs and paths through;
    `annotated_image` adds the drawn boxes or outlines to the output of locate_objects and segment_objects.
    """
    try:
        from agents import FunctionTool
        from agents.strict_schema import ensure_strict_json_schema
    except ImportError as e:
        raise ImportError(f"agents_sdk_tools needs the OpenAI Agents SDK: {INSTALL_HINT}") from e

    policy = policy or ImagePolicy.for_agents()
    return [
        FunctionTool(
            name=tool.name,
            description=tool.description,
            params_json_schema=ensure_strict_json_schema(tool.arguments.model_json_schema()),
            on_invoke_tool=_invoker(tool, client, images, policy, annotated_image, allow_references),
            strict_json_schema=True,
        )
        for tool in TOOLS
    ]


def _invoker(
    tool: AgentTool,
    client: PaliGemmaClient | None,
    images: ImageStore | None,
    policy: ImagePolicy,
    annotated_image: bool,
    allow_references: bool,
) -> Callable[[ToolContext[Any], str], Awaitable[str | list[ToolOutputText | ToolOutputImage]]]:
    from agents import ToolOutputImage, ToolOutputText

    async def invoke(context: ToolContext[Any], arguments: str) -> str | list[ToolOutputText | ToolOutputImage]:
        outcome = await arun_tool(
            tool.name,
            arguments,
            client=client,
            images=images,
            policy=policy,
            annotated_image=annotated_image,
            allow_references=allow_references,
        )
        if outcome.annotated_png is None:
            return outcome.text
        picture = ToolOutputImage(image_url=data_uri("image/png", outcome.annotated_png))
        return [ToolOutputText(text=outcome.text), picture]

    return invoke
