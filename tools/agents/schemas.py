"""The tasks as an LLM sees them: argument models and OpenAI function-tool definitions.

Nothing here is written per tool: each tool's arguments are the image plus its task's options
(tools/tasks.py), every option with a default made nullable (`null` = the default) as OpenAI's
strict mode requires, and, for tools that return masks, `mask_coco_rle`. The JSON schemas come
from these pydantic models (`openai.pydantic_function_tool`: every object closed, every
property required, optional values nullable).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tools.models import LocatedObjects, ToolResult
from tools.tasks import TASKS, Options, Task

IMAGE_DESCRIPTION = (
    "The image: a handle such as 'img_1' for an image already in the conversation (preferred), "
    "an http(s) URL, or a file path the host allows. Never paste base64 image data here."
)
MASK_COCO_RLE_DESCRIPTION = (
    "true to also return each full mask as COCO RLE (large); null/false returns outlines and areas only."
)


class Arguments(BaseModel):
    """What an LLM passes to a tool: the image, then the task's options."""

    # strict: no coercion ("true" is not a boolean), as the JSON schema says. The one leniency:
    # a nullable argument may be left out, as LLMs without strict mode do, and means null.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    image: str = Field(description=IMAGE_DESCRIPTION)


@dataclass(frozen=True)
class AgentTool:
    """One task as a tool: its name and description, and the model of the arguments an LLM passes."""

    task: Task[Any, Any]
    arguments: type[Arguments]

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def description(self) -> str:
        return self.task.description

    @property
    def result(self) -> type[ToolResult]:
        return self.task.result

    def options(self, arguments: Arguments) -> Options:
        """The task's options from validated arguments: null and left-out values take the task's defaults."""
        given = {name: getattr(arguments, name) for name in self.task.options.model_fields}
        return self.task.options.model_validate({k: v for k, v in given.items() if v is not None})  # type: ignore[no-any-return]


def _arguments_model(task: Task[Any, Any]) -> type[Arguments]:
    fields: dict[str, Any] = {}
    for name, info in task.options.model_fields.items():
        if info.is_required():
            fields[name] = (info.annotation, info)
        else:
            nullable: Any = info.annotation
            value = info.get_default(call_default_factory=True)
            default = f"'{value}'" if isinstance(value, str) else json.dumps(value)
            description = f"{info.description} null means {default}."
            fields[name] = (nullable | None, Field(default=None, description=description))
    if issubclass(task.result, LocatedObjects) and task.result.holds_masks():
        fields["mask_coco_rle"] = (bool | None, Field(default=None, description=MASK_COCO_RLE_DESCRIPTION))
    class_name = "".join(word.capitalize() for word in task.name.split("_")) + "Arguments"
    model: type[Arguments] = create_model(
        class_name, __base__=Arguments, __doc__=f"Arguments of {task.name}.", __module__=__name__, **fields
    )
    return model


def agent_tools(tasks: Sequence[Task[Any, Any]] = TASKS) -> tuple[AgentTool, ...]:
    """One tool per task of `tasks`."""
    return tuple(AgentTool(task, _arguments_model(task)) for task in tasks)


TOOLS = agent_tools()
TOOLS_BY_NAME = MappingProxyType({tool.name: tool for tool in TOOLS})


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    parameters: dict[str, Any] = (tool.get("function") or tool)["parameters"]
    return parameters


def _definition(tool: AgentTool, api: Literal["chat", "responses"]) -> dict[str, Any]:
    import openai

    if api == "chat":
        return dict(openai.pydantic_function_tool(tool.arguments, name=tool.name, description=tool.description))
    return dict(openai.pydantic_responses_function_tool(tool.arguments, name=tool.name, description=tool.description))


def openai_tools(
    api: Literal["chat", "responses"] = "chat", *, image_handles: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Tool definitions for `tools=` in Chat Completions (default) or the Responses API.

    With `image_handles`, the image argument may only name those handles: the LLM can then
    neither fetch URLs nor name files, whatever it was told.
    """
    if api not in ("chat", "responses"):
        raise ValueError(f"api must be 'chat' or 'responses', got {api!r}")
    definitions = [_definition(tool, api) for tool in TOOLS]
    if image_handles is not None:
        for definition in definitions:
            image = _parameters(definition)["properties"]["image"]
            image["enum"] = list(image_handles)
            image["description"] = "The image, by its handle in this conversation."
    return definitions
