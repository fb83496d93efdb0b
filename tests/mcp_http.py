"""`paligemma mcp --transport http` as a subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.process import free_port


@contextmanager
def mcp_http_server(base_url: str, *options: str, timeout_s: float = 60) -> Iterator[tuple[str, int]]:
    """Start it against `base_url`, yield (its /mcp URL, its pid) once it listens, stop it after."""
    port = free_port()
    command = [sys.executable, "-m", "clients.cli", "mcp", "--transport", "http", "--port", str(port)]
    with subprocess.Popen([*command, "--base-url", base_url, *options], stderr=subprocess.DEVNULL) as process:
        try:
            deadline = time.monotonic() + timeout_s
            while not _listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"paligemma mcp did not listen on port {port} (exit code {process.poll()})")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/mcp", process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
