"""The main job: serve a PaliGemma 2 checkpoint, send it a photo, print the answers, stop.

With no `--model` it builds the tiny random-weight checkpoint offline, so it runs on any
machine; its answers are random nonsense by construction.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from server import serve
from server.process import free_port
from server.tiny_model import build_tiny_model, is_tiny_model
from server.vllm_command import ServeOptions
from tools.vae_checkpoint import default_cache_dir

if TYPE_CHECKING:
    import tools

SAMPLE_PHOTO = "chelsea.png"  # a cat, 451 x 300, shipped inside scikit-image's wheel


def tiny_model_dir() -> Path:
    """The tiny checkpoint in the user cache, built on first use."""
    directory = default_cache_dir() / "tiny-paligemma2"
    if not is_tiny_model(directory):
        print(f"Building the tiny random-weight PaliGemma 2 in {directory} ...", flush=True)
        build_tiny_model(directory)
    return directory


def sample_photo() -> Path:
    """A real photo shipped with scikit-image (no download)."""
    try:
        data = resources.files("skimage").joinpath("data", SAMPLE_PHOTO)
    except ModuleNotFoundError as e:
        raise SystemExit("The demo photo comes with scikit-image: `pip install 'paligemma-tools[demo]'`.") from e
    return Path(str(data))


def _data_uri(path: Path) -> str:
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def ask_with_openai_sdk(base_url: str, model: str, image: Path, prompt: str) -> str:
    """One chat completion with one image, the way any OpenAI-SDK client does it."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("PALIGEMMA_API_KEY", "EMPTY"))
    reply = client.chat.completions.create(
        model=model,
        max_tokens=32,
        temperature=0,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_uri(image)}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
    )
    return reply.choices[0].message.content or ""


def run_every_tool(base_url: str, model: str, image: Path) -> None:
    """Each typed tool once on `image`, its result printed as the JSON an agent would get."""
    import tools

    calls: list[tuple[str, Callable[[tools.PaliGemmaClient], tools.ToolResult]]] = [
        ("caption_image(photo)", lambda c: tools.caption_image(image, client=c)),
        ("caption_image(photo, detail='long')", lambda c: tools.caption_image(image, detail="long", client=c)),
        ("read_text(photo)", lambda c: tools.read_text(image, client=c)),
        (
            "answer_visual_question(photo, 'what animal is this?')",
            lambda c: tools.answer_visual_question(image, "what animal is this?", client=c),
        ),
        ("generate_question(photo, 'a cat')", lambda c: tools.generate_question(image, "a cat", client=c)),
        ("locate_objects(photo, ['cat', 'eye'])", lambda c: tools.locate_objects(image, ["cat", "eye"], client=c)),
        ("segment_objects(photo, 'cat')", lambda c: tools.segment_objects(image, "cat", client=c)),
    ]
    with tools.PaliGemmaClient(base_url=base_url, model=model) as client:
        for label, call in calls:
            result = call(client)
            print(f"\n{label} -> {type(result).__name__}")
            print(json.dumps(_shortened(result.model_dump(mode="json")), indent=2, ensure_ascii=False))
        if client.vae_decoder_error is not None:
            print(f"\nMasks were not decoded: {client.vae_decoder_error}")


def _shortened(value: object, limit: int = 160) -> object:
    """The JSON with long strings cut for the terminal (the random model writes hundreds of tokens)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... (+{len(value) - limit} characters)"
    if isinstance(value, dict):
        return {k: _shortened(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v, limit) for v in value]
    return value


def run_demo(
    *,
    model: str | None,
    image: Path | None,
    port: int | None,
    device: Literal["auto", "cuda", "cpu"] = "auto",
) -> int:
    """Serve, ask, print, stop. Returns the process exit code."""
    location = model or str(tiny_model_dir())
    photo = image or sample_photo()
    options = ServeOptions(model=location, port=port or free_port())
    the_plan = serve.plan(options, device=device)
    log_path = default_cache_dir() / "logs" / f"demo-serve-{options.port}.log"
    print(f"Starting vLLM ({the_plan.hardware.device}) for {location} (log: {log_path}) ...", flush=True)
    started = time.monotonic()
    with serve.running(the_plan, echo=False, log_path=log_path) as server:
        print(f"Healthy after {time.monotonic() - started:.1f} s at {the_plan.command.base_url} (pid {server.pid}).")
        if the_plan.source.is_tiny:
            print("NOTE: the tiny model has random weights: every answer below is random nonsense by design.")
        answer = ask_with_openai_sdk(the_plan.command.base_url, the_plan.command.served_model_name, photo, "caption en")
        print(f"\nopenai SDK, prompt 'caption en' on {photo.name}:\n  {answer!r}")
        print(f"\nThe typed tools on {photo.name} ({photo}):")
        run_every_tool(the_plan.command.base_url, the_plan.command.served_model_name, photo)
    print("\nServer stopped.")
    return 0
