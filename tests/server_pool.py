"""The vLLM servers of a test session, started together when the first of them is needed.

A vLLM server on a tiny model spends its start importing torch and vLLM in three processes,
mostly on one core: ~30 s on an idle 2-core machine, 60-115 s in a full CI run. Started one
after another as their first tests asked for them, the session's five servers spent about
seven minutes of a CI run starting. The pool starts every pooled server that the collected
tests use at once, so the starts overlap, and each fixture waits only for its own server.
Servers whose tests do not depend on vLLM's process split start with its engine inside the
API server's process (`one_process`): one process fewer to import torch and vLLM into, which
took the pool's start from 325 s to 231 s of a local run. Each server stops (its whole process
group, by process id) when its fixture is torn down (`stop`), and every one still running when
the session ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from server import serve
from server.process import VllmServer, free_port
from server.vllm_command import ServeOptions


@dataclass(frozen=True)
class TinyServer:
    """A running vLLM server on a tiny model."""

    base_url: str
    model: str
    model_dir: Path
    pid: int
    log_path: Path


Prepare = Callable[["ServerPool"], ServeOptions]  # builds what the server needs; returns its options


class ServerPool:
    """Servers started in the background by name; `ready(name)` waits for one to be healthy."""

    def __init__(self, logs: Path, timeout_s: float) -> None:
        self._logs = logs
        self._timeout_s = timeout_s
        self._stacks: dict[str, contextlib.ExitStack] = {}
        self._lock = threading.Lock()
        self._ports: set[int] = set()
        self._threads = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="server-pool")
        self._starting: dict[str, concurrent.futures.Future[tuple[VllmServer, serve.Plan]]] = {}

    def port(self) -> int:
        """A free port not yet given to another server of the pool (each binds it only once started)."""
        with self._lock:
            while (port := free_port()) in self._ports:
                pass
            self._ports.add(port)
            return port

    def start(self, name: str, prepare: Prepare, *, one_process: bool = False) -> None:
        """Prepare and start server `name` in the background; `one_process` runs vLLM's engine inside
        its API server's process (VLLM_ENABLE_V1_MULTIPROCESSING=0), a cheaper start for servers
        whose tests do not depend on how vLLM splits its processes."""
        self._starting[name] = self._threads.submit(self._start, name, prepare, one_process)

    def _start(self, name: str, prepare: Prepare, one_process: bool) -> tuple[VllmServer, serve.Plan]:
        the_plan = serve.plan(prepare(self), device="cpu")
        if one_process:
            env = {**the_plan.command.env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
            the_plan = dataclasses.replace(the_plan, command=dataclasses.replace(the_plan.command, env=env))
        with self._lock:
            stack = self._stacks[name] = contextlib.ExitStack()
            server = stack.enter_context(serve.started(the_plan, echo=False, log_path=self.log_path(name)))
        return server, the_plan

    def log_path(self, name: str) -> Path:
        return self._logs / f"{name}.log"

    def ready(self, name: str) -> TinyServer:
        """Server `name`, once healthy (it must have been started)."""
        server, the_plan = self._starting[name].result()
        server.wait_until_healthy(self._timeout_s)
        return TinyServer(
            base_url=the_plan.command.base_url,
            model=the_plan.command.served_model_name,
            model_dir=Path(the_plan.source.location),
            pid=server.pid,
            log_path=self.log_path(name),
        )

    def stop(self, name: str) -> None:
        """Stop server `name` (every process of it) if it was started."""
        if name in self._starting:
            concurrent.futures.wait([self._starting[name]])
        with self._lock:
            stack = self._stacks.pop(name, None)
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._threads.shutdown(wait=True)  # a server still starting is started, then stopped
        for name in list(self._stacks):
            self.stop(name)
