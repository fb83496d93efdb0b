"""A small agent: a tool-calling LLM answers a task about an image by calling the PaliGemma tools.

    python -m clients.agent --image photo.jpg "How many cats are there, and which is largest?"

The agent LLM is any OpenAI-compatible endpoint with tool calling (GPT, Claude through a
gateway, Llama or Qwen behind vLLM): `--llm-base-url`, `--llm-model`, `--llm-api-key` or
AGENT_BASE_URL, AGENT_MODEL, AGENT_API_KEY (OPENAI_API_KEY works too). The PaliGemma
endpoint comes from PALIGEMMA_BASE_URL / PALIGEMMA_MODEL. The LLM never sees base64: the
image is registered under a handle (`img_1`) that it passes to the tools.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from tools import ImagePolicy, ImageStore, PaliGemmaClient
from tools.agents import TOOLS, openai_tools, run_tool_call

SYSTEM = (
    "You answer questions about images by calling vision tools backed by PaliGemma 2. "
    "Call the tools you need, then answer briefly in plain words. Coordinates in tool results are pixels "
    "of the original image, origin top-left, x right, y down. {images}"
)


def run_agent(
    task: str,
    image: str,
    *,
    llm: Any,
    llm_model: str,
    paligemma: PaliGemmaClient,
    max_steps: int = 6,
    first_tool: str | None = None,
    llm_extra_body: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
) -> str:
    """Loop: ask the LLM, run the tool calls it makes, feed the results back, until it answers.

    `first_tool` makes the first step call that tool (named tool choice), e.g. caption_image
    so that the LLM looks at the image before anything else.
    """
    images = ImageStore(policy=ImagePolicy())  # the user's own image: local files allowed
    handle = images.add(image)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM.format(images=images.describe())},
        {"role": "user", "content": f"{task}\n(The image is {handle}.)"},
    ]
    tools = openai_tools(image_handles=images.handles)
    for step in range(max_steps):
        choice: Any = "auto"
        if step == 0 and first_tool is not None:
            choice = {"type": "function", "function": {"name": first_tool}}
        reply = llm.chat.completions.create(
            model=llm_model, messages=messages, tools=tools, tool_choice=choice, extra_body=llm_extra_body
        )
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            answer = message.content or ""
            say(f"answer: {answer}")
            return str(answer)
        for call in message.tool_calls:
            say(f"tool call: {call.function.name}({call.function.arguments})")
            output = run_tool_call(call, client=paligemma, images=images)
            outcome = output.outcome
            say(f"  -> {'error: ' + outcome.error if outcome.error else outcome.text[:400]}")
            messages.extend(output.messages)
    say(f"no answer after {max_steps} steps")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.agent", description=__doc__.splitlines()[0])
    parser.add_argument("task", help="what to find out about the image")
    parser.add_argument("--image", required=True, help="image file, http(s) URL or data URI")
    parser.add_argument("--llm-base-url", default=os.environ.get("AGENT_BASE_URL"))
    parser.add_argument("--llm-model", default=os.environ.get("AGENT_MODEL"))
    parser.add_argument("--llm-api-key", default=os.environ.get("AGENT_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument(
        "--first-tool", choices=[tool.name for tool in TOOLS], help="make the first step call this tool"
    )
    args = parser.parse_args(argv)
    if not args.llm_model:
        parser.error("name the tool-calling LLM with --llm-model or AGENT_MODEL")
    from openai import OpenAI

    llm = OpenAI(base_url=args.llm_base_url, api_key=args.llm_api_key or "EMPTY")
    with PaliGemmaClient() as paligemma:
        answer = run_agent(
            args.task,
            args.image,
            llm=llm,
            llm_model=args.llm_model,
            paligemma=paligemma,
            max_steps=args.max_steps,
            first_tool=args.first_tool,
        )
    json.dump({"answer": answer}, sys.stdout)
    print()
    return 0 if answer else 1


if __name__ == "__main__":
    raise SystemExit(main())
