"""The tools as OpenAI function-tool definitions, derived from their pydantic argument models.

`openai.pydantic_function_tool` turns each model into a strict-mode schema: every object
closed, every property required, optional values nullable.
"""

from __future__ import annotations

from typing import Any, Literal

from tools.agent_tools import TOOLS


def openai_tools(api: Literal["chat", "responses"] = "chat") -> list[dict[str, Any]]:
    """Tool definitions for `tools=` in Chat Completions (default) or the Responses API."""
    import openai

    if api == "chat":
        return [
            dict(openai.pydantic_function_tool(spec.arguments, name=spec.name, description=spec.description))
            for spec in TOOLS
        ]
    if api == "responses":
        return [
            dict(openai.pydantic_responses_function_tool(spec.arguments, name=spec.name, description=spec.description))
            for spec in TOOLS
        ]
    raise ValueError(f"api must be 'chat' or 'responses', got {api!r}")
