"""Session fixtures: the tiny random checkpoint and the vLLM servers of the session (tests/server_pool.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from server.lora import read_adapters
from server.model_source import TINY_NAME
from server.tiny_model import build_tiny_model
from server.vllm_command import ServeOptions
from tests.server_pool import Prepare, ServerPool, TinyServer
from training import star_scenes

# How long a test waits for vLLM to get healthy: as long as `paligemma serve` does, since a CPU
# machine busy with other work (a training run) starts it many times slower than an idle one.
START_TIMEOUT_S = 900

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    """Tests send Ctrl-C (SIGINT) to the commands they start. A run launched in the background of a
    shell without job control inherits SIGINT ignored, and so would every command it starts: give
    the run Python's own handler back, which the commands then start with (the default)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: scripts/test.sh runs the `vllm` tests apart
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `vllm` every test that uses a pooled server (its fixture closure holds server_pool),
    whether or not its module says so."""
    for item in items:
        if "server_pool" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("checkpoints") / "tiny-paligemma2")


# The tiny random model also plays the agent LLM in tests/clients/test_agent.py: a per-request chat
# template, automatic tool choice with the pythonic parser (no special tokens needed), and JSON
# grammars without free whitespace (random weights would otherwise pad tool arguments with tabs
# forever). Requests without tools or templates, as every other test sends, are unaffected.
AGENT_LLM_ARGS = (
    "--trust-request-chat-template",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "pythonic",
    "--structured-outputs-config",
    '{"backend": "xgrammar", "disable_any_whitespace": true}',
)
WINDOW = 128  # Gemma 2's sliding window of the windowed model, cut below the tiny model's 256 image tokens


def build_windowed_model(folder: Path) -> Path:
    """The tiny random model with a 128-token sliding window: its 256-token image outgrows the window
    as the 4,096 image tokens of an 896 px checkpoint fill Gemma 2's 4,096-token one."""
    model_dir = build_tiny_model(folder)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["text_config"]["sliding_window"] = WINDOW
    config_path.write_text(json.dumps(config, indent=2))
    return model_dir


def run_finetune(work: Path, name: str, *, scenes: int, seed: int, args: list[str]) -> tuple[Path, str]:
    """`paligemma finetune --model tiny` on `scenes` star scenes written to `work/data`, into
    `work/name` with `args`; returns the output folder and what the command printed."""
    coco = star_scenes.write_coco(work / "data", scenes, seed=seed, max_side=200)
    out = work / name
    command = [sys.executable, "-m", "clients.cli", "finetune", "--model", TINY_NAME, "--data", str(coco)]
    command += ["--images", str(coco.parent / "images"), "--out", str(out), *args]
    finetuned = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if finetuned.returncode != 0:
        raise RuntimeError(f"finetune failed ({finetuned.returncode}):\n{finetuned.stdout}\n{finetuned.stderr}")
    return out, finetuned.stdout


def finetune_star_adapter(work: Path) -> Path:
    """`paligemma finetune --lora` for a few steps (the first of the README's three fine-tuning
    commands); returns the adapter's folder."""
    args = ["--task", "detect", "--lora", "--max-steps", "3", "--batch-size", "4", "--eval-split", "0.25"]
    out, printed = run_finetune(work, "star", scenes=8, seed=11, args=args)
    if "AP50" not in printed:
        raise RuntimeError(f"finetune printed no held-out AP50:\n{printed}")
    return out


def finetune_full_checkpoint(work: Path) -> Path:
    """`paligemma finetune --full`, one step at the full method's learning rate: a whole
    checkpoint, whose card names the tiny model as its base."""
    args = ["--task", "segment", "--full", "--max-steps", "1", "--batch-size", "2", "--eval-split", "0"]
    return run_finetune(work, "stars-full", scenes=4, seed=12, args=args)[0]


@pytest.fixture(scope="session")
def finetune_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="session")
def server_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """Starts, at once, every pooled server the collected tests use (tests/server_pool.py)."""
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    model_dir: Path = request.getfixturevalue("tiny_model_dir")
    windowed_dir = tmp_path_factory.mktemp("checkpoints") / f"tiny-window-{WINDOW}"
    finetune_dir: Path = (
        request.getfixturevalue("finetune_work") if {"lora_server", "full_finetune_server"} & wanted else windowed_dir
    )
    # Every pooled server but the trained one starts eager (~18 s sooner on CPU); the trained one
    # is served as `paligemma serve --model tiny` serves it, compiled.
    plans: dict[str, Prepare] = {
        "tiny_server": lambda pool: ServeOptions(
            model=str(model_dir), port=pool.port(), vllm_args=AGENT_LLM_ARGS, eager=True
        ),
        "trained_server": lambda pool: ServeOptions(model=TINY_NAME, port=pool.port()),
        "doomed_server": lambda pool: ServeOptions(model=str(model_dir), port=pool.port(), eager=True),
        "causal_server": lambda pool: ServeOptions(
            model=str(model_dir), port=pool.port(), attention="causal", eager=True
        ),
        "windowed_server": lambda pool: ServeOptions(
            model=str(build_windowed_model(windowed_dir)), port=pool.port(), eager=True
        ),
        "lora_server": lambda pool: ServeOptions(
            model=TINY_NAME,
            port=pool.port(),
            loras=read_adapters([f"star={finetune_star_adapter(finetune_dir)}"]),
            eager=True,
        ),
        "full_finetune_server": lambda pool: ServeOptions(
            model=str(finetune_full_checkpoint(finetune_dir / "full")), port=pool.port(), eager=True
        ),
    }
    with ServerPool(tmp_path_factory.mktemp("logs"), START_TIMEOUT_S) as pool:
        for name, prepare in plans.items():
            if name in wanted:
                pool.start(name, prepare)
        yield pool


@pytest.fixture(scope="session")
def tiny_server(server_pool: ServerPool) -> TinyServer:
    """`paligemma serve` on the tiny random model, with the agent LLM's options (AGENT_LLM_ARGS)."""
    return server_pool.ready("tiny_server")


@pytest.fixture(scope="session")
def trained_server(server_pool: ServerPool) -> TinyServer:
    """`paligemma serve --model tiny`: the trained tiny model, as a user starts it."""
    return server_pool.ready("trained_server")


@pytest.fixture(scope="module")
def doomed_server(server_pool: ServerPool) -> Iterator[TinyServer]:
    """`paligemma serve` on the tiny random model, for the one test that kills it (by `stop`)."""
    yield server_pool.ready("doomed_server")
    server_pool.stop("doomed_server")  # a no-op once the test has killed it


@pytest.fixture(scope="module")
def causal_server(server_pool: ServerPool) -> Iterator[TinyServer]:
    """`paligemma serve --attention causal` on the tiny model: vLLM's plain causal mask, for comparison."""
    yield server_pool.ready("causal_server")
    server_pool.stop("causal_server")  # only one module uses it


@pytest.fixture(scope="module")
def windowed_server(server_pool: ServerPool) -> Iterator[TinyServer]:
    """The tiny model with a sliding window shorter than its prompts (build_windowed_model)."""
    yield server_pool.ready("windowed_server")
    server_pool.stop("windowed_server")  # only one module uses it


@pytest.fixture(scope="module")
def lora_server(server_pool: ServerPool) -> Iterator[TinyServer]:
    """`paligemma serve --model tiny --lora star=ADAPTER`, the adapter from finetune_star_adapter."""
    yield server_pool.ready("lora_server")
    server_pool.stop("lora_server")  # only one module uses it


@pytest.fixture(scope="module")
def full_finetune_server(server_pool: ServerPool) -> Iterator[TinyServer]:
    """`paligemma serve --model OUT` on a full fine-tune of the tiny model (finetune_full_checkpoint)."""
    yield server_pool.ready("full_finetune_server")
    server_pool.stop("full_finetune_server")  # only one module uses it
