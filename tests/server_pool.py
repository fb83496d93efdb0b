"""The vLLM servers of a test session, started together when the first of them is needed.

A vLLM server on a tiny model spends its start importing torch and vLLM in three processes,
mostly on one core: ~30 s on an idle 2-core machine, 60-115 s in a full CI run. Started one
after another as their first tests asked for them, the session's five servers spent about
seven minutes of a CI run starting. The pool starts every pooled server that the collected
tests use at once, so the starts overlap, and each fixture waits only for its own server.
Pooled servers run the model in vLLM's engine-core process (VLLM_ENABLE_V1_MULTIPROCESSING=0:
on CPU vLLM otherwise adds a worker process for it): one Python process fewer to import torch
and vLLM into, per server (the pool's start went from 325 s to 231 s of a local run with three
of six servers so). No pooled test depends on that worker: `paligemma serve` as a user starts
it, worker and all, is what tests/server/test_serve_cli.py, tests/clients/test_demo.py and
tests/server/test_parallel_cpu.py start. Each server stops (its whole process
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

    def start(self, name: str, prepare: Prepare) -> None:
        """Prepare and start server `name` in the background, without vLLM's worker process."""
        self._starting[name] = self._threads.submit(self._start, name, prepare)

    def _start(self, name: str, prepare: Prepare) -> tuple[VllmServer, serve.Plan]:
        the_plan = serve.plan(prepare(self), device="cpu")
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
