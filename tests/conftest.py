"""Session fixtures: the tiny random checkpoint, a vLLM server on it, and one on the trained tiny model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from server import serve
from server.model_source import TINY_NAME
from server.process import free_port
from server.tiny_model import build_tiny_model
from server.vllm_command import ServeOptions

# How long a test waits for vLLM to get healthy: as long as `paligemma serve` does, since a CPU
# machine busy with other work (a training run) starts it many times slower than an idle one.
START_TIMEOUT_S = 900

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@dataclass(frozen=True)
class TinyServer:
    """A running vLLM server on the tiny model."""

    base_url: str
    model: str
    model_dir: Path
    pid: int
    log_path: Path


@contextlib.contextmanager
def serving(options: ServeOptions, log_path: Path) -> Iterator[TinyServer]:
    """`paligemma serve` with `options` on this CPU, stopped (by its process id) on exit."""
    the_plan = serve.plan(options, device="cpu")
    with serve.running(the_plan, echo=False, log_path=log_path, timeout_s=START_TIMEOUT_S) as server:
        yield TinyServer(
            base_url=the_plan.command.base_url,
            model=the_plan.command.served_model_name,
            model_dir=Path(the_plan.source.location),
            pid=server.pid,
            log_path=log_path,
        )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("checkpoints") / "tiny-paligemma2")


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    """One vLLM server for the whole session, stopped (its whole process group) at the end.

    Configured as `paligemma serve` configures it, plus vLLM options that let the same tiny
    model also play the agent LLM in tests/clients/test_agent.py: a per-request chat template,
    automatic tool choice with the pythonic parser (no special tokens needed), and JSON
    grammars without free whitespace (random weights would otherwise pad tool arguments with
    tabs forever). Requests without tools or templates, as every other test sends, are unaffected.
    """
    log_path = tmp_path_factory.mktemp("logs") / "vllm-tiny.log"
    agent_llm = (
        "--trust-request-chat-template",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "pythonic",
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    )
    with serving(ServeOptions(model=str(tiny_model_dir), port=free_port(), vllm_args=agent_llm), log_path) as server:
        yield server


@pytest.fixture(scope="session")
def trained_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    """One vLLM server on the trained tiny model (`paligemma serve --model tiny`), as a user starts it."""
    log_path = tmp_path_factory.mktemp("logs") / "vllm-tiny-trained.log"
    with serving(ServeOptions(model=TINY_NAME, port=free_port()), log_path) as server:
        yield server
