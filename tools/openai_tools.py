"""The tools as OpenAI function-tool definitions, derived from their pydantic argument models.

`openai.pydantic_function_tool` turns each model into a strict-mode schema: every object
closed, every property required, optional values nullable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from tools.agent_tools import TOOLS, ToolSpec


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    parameters: dict[str, Any] = (tool.get("function") or tool)["parameters"]
    return parameters


def _definition(spec: ToolSpec, api: Literal["chat", "responses"]) -> dict[str, Any]:
    import openai

    if api == "chat":
        return dict(openai.pydantic_function_tool(spec.arguments, name=spec.name, description=spec.description))
    return dict(openai.pydantic_responses_function_tool(spec.arguments, name=spec.name, description=spec.description))


def openai_tools(
    api: Literal["chat", "responses"] = "chat", *, image_handles: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Tool definitions for `tools=` in Chat Completions (default) or the Responses API.

    With `image_handles`, the image argument may only name those handles: the LLM can then
    neither fetch URLs nor name files, whatever it was told.
    """
    if api not in ("chat", "responses"):
        raise ValueError(f"api must be 'chat' or 'responses', got {api!r}")
    definitions = [_definition(spec, api) for spec in TOOLS]
    if image_handles is not None:
        for tool in definitions:
            image = _parameters(tool)["properties"]["image"]
            image["enum"] = list(image_handles)
            image["description"] = "The image, by its handle in this conversation."
    return definitions
