"""Run a tool call an LLM made and return what to append to the conversation. Never raises.

Takes the call as the OpenAI SDK returns it (Chat Completions `tool_calls[i]` or a Responses
`function_call` item, as objects or dicts). Unknown tools, bad arguments and failures come
back as tool results that say what went wrong, so the model can correct itself: any input
whatsoever gets a result, never an exception, and refused input makes no endpoint request.
Arguments are bounded (size, JSON depth) before they are parsed. With an `ImageStore`, the
image argument must name one of its handles unless the caller allows references.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from tools.agents.payload import dumps, to_agent_json
from tools.agents.schemas import TOOLS_BY_NAME, AgentTool, Arguments
from tools.annotate import annotate
from tools.client import PaliGemmaClient
from tools.errors import ImageError, PaliGemmaError, error_message
from tools.functions import arun_task, default_client, run_task
from tools.image_policy import ImagePolicy
from tools.image_store import HANDLE, ImageStore
from tools.images import LoadedImage, data_uri, load_image
from tools.models import LocatedObjects, ToolResult

logger = logging.getLogger(__name__)
API = Literal["chat", "responses"]
ANNOTATION_MAX_SIDE = 768
MAX_JSON_DEPTH = 16  # the deepest tool argument is 2 levels; json's recursion would fail near 1,000
MAX_JSON_VALUES = 4096  # arrays, objects and list items; the largest tool call holds about 80
_ARGUMENT_OVERHEAD = 64 * 1024  # room for the other arguments beside an image given as a data URI


@dataclass(frozen=True)
class _Call:
    api: API
    call_id: str
    name: str
    arguments: str


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _parse_call(call: Any) -> _Call:
    function = _get(call, "function")
    if function is not None:  # Chat Completions
        return _Call(
            "chat",
            str(_get(call, "id") or ""),
            str(_get(function, "name") or ""),
            str(_get(function, "arguments") or ""),
        )
    return _Call(
        "responses", str(_get(call, "call_id") or ""), str(_get(call, "name") or ""), str(_get(call, "arguments") or "")
    )


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


# A JSON string, escapes included (one that never closes runs to the end), or a run of
# brackets and commas: what `shape_problem` looks at, found by the regex engine at C speed.
_STRING_OR_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},]+', re.DOTALL)


def shape_problem(text: str, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> str | None:
    """What is wrong with the shape of JSON `text`: nesting deeper than `max_depth`, or more than
    `max_values` values (millions of `[]` would take seconds and gigabytes to parse); None if nothing.

    Arguments with few brackets and commas in all can have neither: three counts in C, not a
    Python loop over every character of a data URI. Others are walked string by string (the
    regex engine skips a string's inside) and run by run of brackets and commas, stopping at
    the first bound crossed. Values counted: arrays, objects and the items after a comma.
    """
    openings = text.count("[") + text.count("{")
    if openings <= max_depth and openings + text.count(",") <= max_values:
        return None
    depth = values = 0
    for token in _STRING_OR_STRUCTURE.finditer(text):
        if text[token.start()] == '"':
            continue
        for mark in token[0]:
            if mark in "[{":
                depth += 1
                values += 1
            elif mark == ",":
                values += 1
            else:
                depth -= 1
            if depth > max_depth:
                return f"the arguments nest deeper than {max_depth} levels; send a flat JSON object as the schema says."
            if values > max_values:
                return (
                    f"the arguments hold more than {max_values:,} values; send a flat JSON object as the schema "
                    "says (at most 80 object names)."
                )
    return None


def _check_arguments(arguments_json: str, policy: ImagePolicy) -> str | None:
    """What is wrong with the arguments' size or shape, checked before they are parsed; None if nothing."""
    limit = policy.max_bytes * 4 // 3 + _ARGUMENT_OVERHEAD
    if len(arguments_json) > limit:
        return (
            f"the arguments are {len(arguments_json):,} characters; the limit is {limit:,}. "
            "Name the image by handle or URL."
        )
    return shape_problem(arguments_json)


def _prepare(
    name: str, arguments_json: str, images: ImageStore | None, policy: ImagePolicy, references: bool
) -> tuple[AgentTool, Arguments, LoadedImage] | str:
    """The tool, its validated arguments and its image, or what is wrong with the call."""
    tool = TOOLS_BY_NAME.get(name)
    if tool is None:
        return f"unknown tool {name[:100]!r}; the tools are: {', '.join(TOOLS_BY_NAME)}."
    if problem := _check_arguments(arguments_json, policy):
        return problem
    try:
        json.loads(arguments_json or "{}")
    except json.JSONDecodeError as e:
        return f"the arguments are not valid JSON ({e.msg} at position {e.pos}); send a JSON object."
    except (ValueError, RecursionError) as e:  # a number over Python's 4,300-digit limit, ...
        return f"the arguments cannot be read as JSON ({str(e)[:200]}); send a JSON object as the schema says."
    try:
        arguments = tool.arguments.model_validate_json(arguments_json or "{}")
    except ValidationError as e:
        return f"invalid arguments for {tool.name}: {validation_message(e)[:2000]}."
    try:
        return tool, arguments, _resolve_image(arguments.image, images, policy, references)
    except ImageError as e:
        return str(e)


def _resolve_image(reference: str, images: ImageStore | None, policy: ImagePolicy, references: bool) -> LoadedImage:
    reference = reference.strip()
    if HANDLE.fullmatch(reference):
        if images is None:
            raise ImageError(f"{reference!r} is an image handle, but this host keeps no images; pass a URL instead.")
        return images.get(reference)
    if images is not None and not references:
        known = ", ".join(images.handles) or "none yet"
        raise ImageError(
            f"the image must be named by its handle in this conversation ({known}); URLs, data URIs and paths "
            "are not accepted here. Use a handle from the conversation."
        )
    return load_image(reference, policy)


@dataclass(frozen=True)
class Outcome:
    """What running a tool gave: the JSON for the LLM, and the typed result or the error."""

    payload: dict[str, Any]
    result: ToolResult | None = None
    error: str | None = None
    annotated_png: bytes | None = None

    @property
    def text(self) -> str:
        return dumps(self.payload)


def _failure(name: str, message: str) -> Outcome:
    return Outcome({"error": message, "tool": name}, error=message)


def _raised(name: str, error: Exception) -> Outcome:
    """Our errors carry their message for the LLM; anything else is a bug: logged with its traceback."""
    if not isinstance(error, PaliGemmaError):
        logger.error("tool %s failed unexpectedly", name[:100], exc_info=error)
    return _failure(name, error_message(error, name))


def _success(arguments: Arguments, result: ToolResult, loaded: LoadedImage, annotated: bool) -> Outcome:
    mask_coco_rle = bool(getattr(arguments, "mask_coco_rle", False))  # only tools that return masks take it
    png = None
    if annotated and isinstance(result, LocatedObjects) and result.objects:
        buffer = io.BytesIO()
        annotate(loaded.image, result, max_side=ANNOTATION_MAX_SIDE).save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    return Outcome(to_agent_json(result, mask_coco_rle=mask_coco_rle), result=result, annotated_png=png)


def run_tool(
    name: str,
    arguments: str,
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    annotated_image: bool = False,
    allow_references: bool = False,
) -> Outcome:
    """Validate and run one tool by name with JSON arguments; failures become an Outcome with `error`.

    With `images`, the image argument must be one of its handles, unless `allow_references`
    lets URLs, data URIs and paths through too (under `policy`, default: no local files).
    """
    try:
        paligemma = client or default_client()
        with paligemma.limit():  # the image is decoded inside the client's concurrency limit
            prepared = _prepare(name, arguments, images, policy or ImagePolicy.for_agents(), allow_references)
            if isinstance(prepared, str):
                return _failure(name, prepared)
            tool, args, loaded = prepared
            result = run_task(tool.task, loaded, tool.options(args), client=paligemma)
            return _success(args, result, loaded, annotated_image)
    except Exception as e:  # a bug must not kill the agent loop either
        return _raised(name, e)


async def arun_tool(
    name: str,
    arguments: str,
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    annotated_image: bool = False,
    allow_references: bool = False,
) -> Outcome:
    """The async form of `run_tool`: parsing, decoding and drawing run off the event loop."""
    try:
        paligemma = client or default_client()
        async with paligemma.alimit():
            prepared = await asyncio.to_thread(
                _prepare, name, arguments, images, policy or ImagePolicy.for_agents(), allow_references
            )
            if isinstance(prepared, str):
                return _failure(name, prepared)
            tool, args, loaded = prepared
            result = await arun_task(tool.task, loaded, tool.options(args), client=paligemma)
            return await asyncio.to_thread(_success, args, result, loaded, annotated_image)
    except Exception as e:  # a bug must not kill the agent loop either
        return _raised(name, e)


def _messages(call: _Call, outcome: Outcome) -> list[dict[str, Any]]:
    image_uri = None
    if outcome.annotated_png is not None:
        image_uri = data_uri("image/png", outcome.annotated_png)
    if call.api == "responses":
        output: str | list[dict[str, Any]] = outcome.text
        if image_uri is not None:
            output = [{"type": "input_text", "text": outcome.text}, {"type": "input_image", "image_url": image_uri}]
        return [{"type": "function_call_output", "call_id": call.call_id, "output": output}]
    messages: list[dict[str, Any]] = [{"role": "tool", "tool_call_id": call.call_id, "content": outcome.text}]
    if image_uri is not None:  # Chat Completions tool messages carry text only: the picture follows as a user turn
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"The annotated image for tool call {call.call_id} ({call.name})."},
                    {"type": "image_url", "image_url": {"url": image_uri}},
                ],
            }
        )
    return messages


@dataclass(frozen=True)
class ToolCallOutput:
    """The messages to append for one tool call, and what the tool gave."""

    messages: list[dict[str, Any]]
    outcome: Outcome


def run_tool_call(
    call: Any,
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    annotated_image: bool = False,
    allow_references: bool = False,
) -> ToolCallOutput:
    """Run a tool call from the OpenAI SDK; `policy` governs URLs and paths in arguments (default: no local files).

    With `images`, only its handles name images unless `allow_references` is set. Never raises.
    """
    try:
        parsed = _parse_call(call)
    except Exception as e:  # an object that is no tool call at all
        return _unreadable_call(e)
    outcome = run_tool(
        parsed.name,
        parsed.arguments,
        client=client,
        images=images,
        policy=policy,
        annotated_image=annotated_image,
        allow_references=allow_references,
    )
    return ToolCallOutput(_messages(parsed, outcome), outcome)


async def arun_tool_call(
    call: Any,
    *,
    client: PaliGemmaClient | None = None,
    images: ImageStore | None = None,
    policy: ImagePolicy | None = None,
    annotated_image: bool = False,
    allow_references: bool = False,
) -> ToolCallOutput:
    """The async form of `run_tool_call`."""
    try:
        parsed = _parse_call(call)
    except Exception as e:  # an object that is no tool call at all
        return _unreadable_call(e)
    outcome = await arun_tool(
        parsed.name,
        parsed.arguments,
        client=client,
        images=images,
        policy=policy,
        annotated_image=annotated_image,
        allow_references=allow_references,
    )
    return ToolCallOutput(_messages(parsed, outcome), outcome)


def _unreadable_call(error: Exception) -> ToolCallOutput:
    message = (
        f"the tool call could not be read ({type(error).__name__}); "
        "send a function call with a name and JSON arguments."
    )
    outcome = Outcome({"error": message, "tool": ""}, error=message)
    return ToolCallOutput(_messages(_Call("chat", "", "", ""), outcome), outcome)
