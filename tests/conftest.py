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


def finetune_star_adapter(work: Path) -> Path:
    """`paligemma finetune --lora` for a few steps on star scenes written to `work/data` (the first
    of the README's three fine-tuning commands); returns the adapter's folder."""
    coco = star_scenes.write_coco(work / "data", 8, seed=11, max_side=200)
    out = work / "star"
    finetuned = subprocess.run(
        [sys.executable, "-m", "clients.cli", "finetune", "--model", TINY_NAME, "--data", str(coco), "--images",
         str(coco.parent / "images"), "--task", "detect", "--out", str(out), "--lora", "--max-steps", "3",
         "--batch-size", "4", "--eval-split", "0.25"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if finetuned.returncode != 0 or "AP50" not in finetuned.stdout:
        raise RuntimeError(f"finetune failed ({finetuned.returncode}):\n{finetuned.stdout}\n{finetuned.stderr}")
    return out


@pytest.fixture(scope="session")
def finetune_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="session")
def server_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """Starts, at once, every pooled server the collected tests use (tests/server_pool.py)."""
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    model_dir: Path = request.getfixturevalue("tiny_model_dir")
    windowed_dir = tmp_path_factory.mktemp("checkpoints") / f"tiny-window-{WINDOW}"
    finetune_dir: Path = request.getfixturevalue("finetune_work") if "lora_server" in wanted else windowed_dir
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
