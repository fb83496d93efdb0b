"""The tools for LLMs: function-tool schemas, the dispatcher, the MCP server, Agents SDK and LangChain tools.

Everything here is derived from the task registry (tools/tasks.py) and runs the tasks through
`tools.run_task`; no module of the core imports this package. The frameworks (mcp, openai-agents,
langchain-core) are imported only when their entry point is called.
"""

from tools.agents.dispatch import Outcome, ToolCallOutput, arun_tool, arun_tool_call, run_tool, run_tool_call
from tools.agents.langchain import langchain_tools
from tools.agents.mcp_server import McpSettings, build_server, serve_mcp, tool_list
from tools.agents.openai_agents import agents_sdk_tools
from tools.agents.payload import output_schema, to_agent_json
from tools.agents.schemas import TOOLS, TOOLS_BY_NAME, AgentTool, Arguments, agent_tools, openai_tools

__all__ = [
    "TOOLS",
    "TOOLS_BY_NAME",
    "AgentTool",
    "Arguments",
    "McpSettings",
    "Outcome",
    "ToolCallOutput",
    "agent_tools",
    "agents_sdk_tools",
    "arun_tool",
    "arun_tool_call",
    "build_server",
    "langchain_tools",
    "openai_tools",
    "output_schema",
    "run_tool",
    "run_tool_call",
    "serve_mcp",
    "to_agent_json",
    "tool_list",
]
