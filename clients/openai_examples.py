"""Plain OpenAI-SDK calls to the served PaliGemma endpoint, no paligemma-tools involved.

    python -m clients.openai_examples photo.jpg [https://example.com/photo.jpg]

Each function is a complete example to copy. The endpoint and model come from
PALIGEMMA_BASE_URL (default http://127.0.0.1:8000/v1) and PALIGEMMA_MODEL (default: the
first model the endpoint serves). One image per request; the text is a PaliGemma task
prompt such as `caption en`, `ocr`, `answer en what is this?`, `detect cat`.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import sys
from pathlib import Path

from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam


def base_url() -> str:
    return os.environ.get("PALIGEMMA_BASE_URL", "http://127.0.0.1:8000/v1")


def api_key() -> str:
    return os.environ.get("PALIGEMMA_API_KEY", "EMPTY")


def model_name(client: OpenAI) -> str:
    return os.environ.get("PALIGEMMA_MODEL") or client.models.list().data[0].id


def image_message(image_url: str, prompt: str) -> list[ChatCompletionMessageParam]:
    """One user message: the image first, then the task prompt."""
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}],
        }
    ]


def data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def caption_by_url(url: str) -> str:
    """The server downloads the image from `url`."""
    client = OpenAI(base_url=base_url(), api_key=api_key())
    reply = client.chat.completions.create(
        model=model_name(client),
        messages=image_message(url, "caption en"),
        max_tokens=64,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def detect_in_file(path: Path, objects: str = "cat ; dog") -> str:
    """The image travels in the request, base64-encoded; the answer keeps PaliGemma's <loc> tokens."""
    client = OpenAI(base_url=base_url(), api_key=api_key())
    reply = client.chat.completions.create(
        model=model_name(client),
        messages=image_message(data_uri(path), f"detect {objects}"),
        max_tokens=128,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def describe_streaming(path: Path) -> str:
    """Tokens arrive as they are generated."""
    client = OpenAI(base_url=base_url(), api_key=api_key())
    stream = client.chat.completions.create(
        model=model_name(client),
        messages=image_message(data_uri(path), "describe en"),
        max_tokens=128,
        temperature=0,
        stream=True,
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    return "".join(pieces)


async def caption_many(paths: list[Path], concurrency: int = 8) -> list[str]:
    """Many images at once with the async client; vLLM batches them on the server."""
    async with AsyncOpenAI(base_url=base_url(), api_key=api_key()) as client:
        model = os.environ.get("PALIGEMMA_MODEL") or (await client.models.list()).data[0].id
        slots = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> str:
            async with slots:
                reply = await client.chat.completions.create(
                    model=model,
                    messages=image_message(data_uri(path), "caption en"),
                    max_tokens=64,
                    temperature=0,
                )
                return reply.choices[0].message.content or ""

        return await asyncio.gather(*(one(p) for p in paths))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    path = Path(argv[0])
    print("detect:", detect_in_file(path))
    print("describe (streamed): ", end="")
    describe_streaming(path)
    print("captions:", asyncio.run(caption_many([path] * 4)))
    if len(argv) > 1:
        print("caption by URL:", caption_by_url(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
