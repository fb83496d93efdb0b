"""The tools as an MCP server on the official `mcp` SDK, over stdio or streamable HTTP.

Every tool is listed with its input schema (from its pydantic arguments) and its output
schema (the compact JSON an LLM gets). A call returns that JSON as structured content and
as text, plus, for boxes and masks, an annotated PNG (downscaled) as image content.
Failures come back as tool results marked as errors, with a message saying what to do.

MCP calls share no conversation state, so images are http(s) URLs, data URIs, or files
under the folders the operator allows (`--allow-root`; none by default).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tools.agents.dispatch import Outcome, arun_tool
from tools.agents.payload import output_schema
from tools.agents.schemas import TOOLS, AgentTool
from tools.client import PaliGemmaClient
from tools.image_policy import MIB, ImagePolicy
from tools.tasks import TASKS

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server

SERVER_NAME = "paligemma-tools"
INSTRUCTIONS = (
    f"Vision tools backed by PaliGemma 2 ({', '.join(task.name for task in TASKS)}), each on one image given as "
    "an http(s) URL, a data URI, or a file path under the folders this server allows. "
    "Coordinates are pixels of the original image, origin top-left, x right, y down."
)


@dataclass(frozen=True)
class McpSettings:
    """How the MCP server reaches PaliGemma and what images it accepts."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    allowed_roots: tuple[Path, ...] = ()
    allow_urls: bool = True
    max_image_bytes: int = 32 * MIB
    annotated_images: bool = True
    timeout_s: float = 60.0  # per request to the PaliGemma endpoint

    def policy(self) -> ImagePolicy:
        return ImagePolicy.for_agents(
            allowed_roots=self.allowed_roots, allow_urls=self.allow_urls, max_bytes=self.max_image_bytes
        )


def tool_list(agent_tools: Sequence[AgentTool] = TOOLS) -> list[mcp_types.Tool]:
    """The MCP listing of `agent_tools`: input schemas from their arguments, output schemas from their results."""
    import mcp_types

    annotations = mcp_types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=True)
    return [
        mcp_types.Tool(
            name=tool.name,
            description=tool.description,
            input_schema=tool.arguments.model_json_schema(),
            output_schema=output_schema(tool.result),
            annotations=annotations,
        )
        for tool in agent_tools
    ]


def _call_result(outcome: Outcome) -> mcp_types.CallToolResult:
    import mcp_types

    content: list[Any] = [mcp_types.TextContent(type="text", text=outcome.text)]
    if outcome.error is not None:
        return mcp_types.CallToolResult(content=content, is_error=True)
    if outcome.annotated_png is not None:
        data = base64.b64encode(outcome.annotated_png).decode("ascii")
        content.append(mcp_types.ImageContent(type="image", data=data, mime_type="image/png"))
    return mcp_types.CallToolResult(content=content, structured_content=outcome.payload)


def build_server(settings: McpSettings, client: PaliGemmaClient | None = None) -> Server[Any]:
    """The MCP server; nothing connects to PaliGemma until a tool is called."""
    import mcp_types
    from mcp.server.lowlevel import Server

    paligemma = client or PaliGemmaClient(
        base_url=settings.base_url, model=settings.model, api_key=settings.api_key, timeout_s=settings.timeout_s
    )
    policy = settings.policy()
    tools = tool_list()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        try:
            arguments = json.dumps(params.arguments or {})
        except (TypeError, ValueError, RecursionError):  # nesting or numbers json cannot write: let the dispatcher say
            arguments = "[" * 10_000
        outcome = await arun_tool(
            params.name,
            arguments,
            client=paligemma,
            policy=policy,
            annotated_image=settings.annotated_images,
        )
        return _call_result(outcome)

    @asynccontextmanager
    async def lifespan(server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await paligemma.aclose()  # the endpoint connections of this event loop

    return Server(
        SERVER_NAME,
        version="0.1.0",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(settings: McpSettings) -> None:
    """Serve MCP over this process's stdin/stdout until the client closes it."""
    from mcp.server.stdio import stdio_server

    server = build_server(settings)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(settings: McpSettings, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve MCP over streamable HTTP at http://host:port/mcp until interrupted."""
    import uvicorn

    from tools.agents.mcp_guard import MessageGuard

    # An image as a data URI in base64, and room for the rest of the message.
    max_bytes = settings.max_image_bytes * 4 // 3 + 128 * 1024
    app = MessageGuard(build_server(settings).streamable_http_app(host=host), max_bytes=max_bytes)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve_mcp(settings: McpSettings, transport: Literal["stdio", "http"], *, host: str, port: int) -> None:
    """Serve MCP over `transport` until the client closes it (stdio) or the process is interrupted (http)."""
    if transport == "stdio":
        import anyio

        anyio.run(serve_stdio, settings)
    else:
        serve_http(settings, host=host, port=port)
