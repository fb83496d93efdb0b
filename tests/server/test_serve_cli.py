"""`paligemma serve` as a user runs it: real subprocesses, real vLLM, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from server.process import free_port

CLI = [sys.executable, "-m", "clients.cli"]
# Runs the rest of its argv in its own place (exec) with SIGINT ignored, which exec keeps.
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.fixture
def hf_cache(tmp_path: Path) -> dict[str, str]:
    """An empty Hugging Face cache: hub checkpoints are not there."""
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}


def test_dry_run_prints_the_command_and_starts_nothing(tiny_model_dir: Path) -> None:
    result = run_cli("serve", "--model", str(tiny_model_dir), "--port", "8123", "--dry-run", "--", "--seed", "7")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("PALIGEMMA_ATTENTION=prefix VLLM_CPU_KVCACHE_SPACE=1 VLLM_USE_V2_MODEL_RUNNER=0 ")
    assert "--port 8123" in line and line.endswith("--disable-hybrid-kv-cache-manager --seed 7")
    assert "--enforce-eager" not in line  # compiled by default
    assert "--no-enable-chunked-prefill" in line  # a prefix is attended two-way only when never split


def test_dry_run_with_causal_attention(tiny_model_dir: Path) -> None:
    result = run_cli("serve", "--model", str(tiny_model_dir), "--attention", "causal", "--dry-run")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("PALIGEMMA_ATTENTION=causal VLLM_CPU_KVCACHE_SPACE=1 ")
    assert "--no-enable-chunked-prefill" not in line and "VLLM_USE_V2_MODEL_RUNNER" not in line


def test_port_in_use_says_so(tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--model", str(tiny_model_dir), "--port", str(port))
    assert result.returncode == 2
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr and "--port" in result.stderr


def test_unreachable_hub_checkpoint_fails_with_advice(hf_cache: dict[str, str]) -> None:
    # The hub at a closed port: unreachable whether or not this machine is online.
    unreachable = {**hf_cache, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_cli("serve", "--model", "3b-mix-448", "--port", str(free_port()), env=unreachable)
    assert result.returncode == 2
    assert "google/paligemma2-3b-mix-448 is not in the local cache" in result.stderr
    assert "the Hugging Face hub cannot be reached" in result.stderr
    assert "pass a local checkpoint folder" in result.stderr


def test_offline_mode_names_the_download_command(hf_cache: dict[str, str]) -> None:
    result = run_cli(
        "serve", "--model", "10b-mix-224", "--port", str(free_port()), env={**hf_cache, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2
    assert "hf download google/paligemma2-10b-mix-224" in result.stderr


def test_cached_hub_checkpoint_passes_the_check_without_network(hf_cache: dict[str, str]) -> None:
    """A checkpoint already in the cache is served as is: the check asks no server."""
    snapshot = Path(hf_cache["HF_HUB_CACHE"]) / "models--google--paligemma2-3b-mix-224" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    code = (
        "from server.model_source import resolve, check_available; check_available(resolve('3b-mix-224')); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **hf_cache}, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.fixture
def serving(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    command = [*CLI, "serve", "--model", str(tiny_model_dir), "--port", str(port), "--quiet", "--eager"]
    command += ["--log-file", str(tmp_path / "vllm.log")]
    # Started as a background job of a shell without job control starts it, with SIGINT ignored:
    # `serve` stops on Ctrl-C all the same (it handles SIGINT itself).
    command = [sys.executable, "-c", IGNORING_SIGINT, *command]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            yield process, port
        finally:
            if process.poll() is None:  # a failed test must not leave the server behind
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()  # vLLM gets SIGTERM when its launcher dies (server.process)
                    process.wait(timeout=10)


@pytest.mark.vllm
def test_serve_prints_usage_when_healthy_and_ctrl_c_stops_every_process(
    serving: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = serving
    assert process.stdout is not None
    banner = []
    for line in process.stdout:
        banner.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    text = "".join(banner)
    assert f"at http://127.0.0.1:{port}/v1 as model 'tiny-paligemma2'" in text
    assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in text
    assert "from openai import OpenAI" in text

    descendants = psutil.Process(process.pid).children(recursive=True)
    assert len(descendants) >= 2  # vLLM's API server and its engine core at least
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    _gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == [], f"still running after Ctrl-C: {[p.pid for p in alive]}"
    assert "Stopped" in (process.stderr.read() if process.stderr else "")
