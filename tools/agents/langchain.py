"""The tools as LangChain structured tools (`pip install 'paligemma-tools[agents]'`).

A thin layer over the dispatcher: `invoke` runs `run_tool`, `ainvoke` runs `arun_tool`.
The ToolMessage content is the compact JSON for the LLM and its artifact the typed
`ToolResult`. Failures, including arguments LangChain rejects against the pydantic schema
and inputs it cannot read at all (a tool call without an id, arguments that are not an
object), come back as content (a ToolMessage with status 'error' and no artifact), never as
exceptions.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tools.agents.dispatch import Outcome, arun_tool, run_tool, validation_message
from tools.agents.payload import dumps
from tools.agents.schemas import TOOLS, AgentTool
from tools.client import PaliGemmaClient
from tools.image_policy import ImagePolicy
from tools.image_store import ImageStore
from tools.models import ToolResult

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

INSTALL_HINT = "pip install 'paligemma-tools[agents]'"

ContentAndArtifact = tuple[str, ToolResult]


def langchain_tools(
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    allow_references: bool = False,
) -> list[StructuredTool]:
    """One `StructuredTool` per tool, its `args_schema` the tool's pydantic arguments.

    `images` resolves handles such as 'img_1'; `policy` governs URLs and paths the LLM names
    (default `ImagePolicy.for_agents()`: no local files); with `images`, only its
    handles name images unless `allow_references` lets URLs, data URIs and paths through.
    """
    try:
        importlib.import_module("langchain_core.tools")
    except ImportError as e:
        raise ImportError(f"langchain_tools needs langchain-core: {INSTALL_HINT}") from e
    tool_class = _never_raising_tool()

    policy = policy or ImagePolicy.for_agents()
    structured: list[StructuredTool] = []
    for tool in TOOLS:
        func, coroutine = _runners(tool, client, images, policy, allow_references)
        structured.append(
            tool_class.from_function(
                func=func,
                coroutine=coroutine,
                name=tool.name,
                description=tool.description,
                args_schema=tool.arguments,
                response_format="content_and_artifact",
                handle_validation_error=_validation_error_text(tool.name),
                handle_tool_error=True,
            )
        )
    return structured


@functools.cache
def _never_raising_tool() -> type[StructuredTool]:
    """StructuredTool whose `invoke`/`ainvoke` answer what LangChain itself cannot read (a tool
    call with no id, arguments that are not an object) with an error, as for any other input."""
    from langchain_core.tools import StructuredTool

    class NeverRaisingTool(StructuredTool):
        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            try:
                return super().invoke(input, config, **kwargs)
            except Exception as e:  # LangChain's own input handling, before the tool runs
                return _unreadable(self.name, input, e)

        async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            try:
                return await super().ainvoke(input, config, **kwargs)
            except Exception as e:
                return _unreadable(self.name, input, e)

    return NeverRaisingTool


def _unreadable(name: str, given: object, error: Exception) -> Any:
    """The error answer to an input LangChain could not turn into a call: a ToolMessage for a tool call."""
    from langchain_core.messages import ToolMessage

    message = (
        f"the call to {name} could not be read ({type(error).__name__}: {str(error)[:200]}); "
        "call it with a JSON object of its arguments, as the schema says."
    )
    text = Outcome({"error": message, "tool": name}, error=message).text
    if isinstance(given, dict) and given.get("type") == "tool_call":
        call_id = given.get("id")
        return ToolMessage(text, tool_call_id=call_id if isinstance(call_id, str) else "", name=name, status="error")
    return text


def _runners(
    tool: AgentTool,
    client: PaliGemmaClient | None,
    images: ImageStore | None,
    policy: ImagePolicy,
    allow_references: bool,
) -> tuple[Callable[..., ContentAndArtifact], Callable[..., Awaitable[ContentAndArtifact]]]:
    # LangChain passes the validated fields as keywords, or a lone string input as the first
    # positional argument (the image); the dispatcher validates the JSON again, as for any LLM call.
    def run(image: str, **arguments: Any) -> ContentAndArtifact:
        outcome = run_tool(
            tool.name,
            _arguments_json(image, arguments),
            client=client,
            images=images,
            policy=policy,
            allow_references=allow_references,
        )
        return _content_and_artifact(outcome)

    async def arun(image: str, **arguments: Any) -> ContentAndArtifact:
        outcome = await arun_tool(
            tool.name,
            _arguments_json(image, arguments),
            client=client,
            images=images,
            policy=policy,
            allow_references=allow_references,
        )
        return _content_and_artifact(outcome)

    return run, arun


def _arguments_json(image: object, arguments: dict[str, Any]) -> str:
    """The JSON the dispatcher validates; what cannot be JSON (a 5,000-digit int, a cycle) becomes a string."""
    try:
        return dumps({"image": image, **arguments})
    except (TypeError, ValueError, RecursionError):
        return repr({"image": image, **arguments})[:10_000]  # not JSON: the dispatcher answers with why


def _content_and_artifact(outcome: Outcome) -> ContentAndArtifact:
    from langchain_core.tools import ToolException

    if outcome.result is None:  # handle_tool_error=True turns this into content with status 'error'
        raise ToolException(outcome.text)
    return outcome.text, outcome.result


def _validation_error_text(name: str) -> Callable[[ValidationError], str]:
    def text(error: ValidationError) -> str:
        message = f"invalid arguments for {name}: {validation_message(error)}."
        return Outcome({"error": message, "tool": name}, error=message).text

    return text
