"""The one extra server of tests/server: the tiny model served with `--attention causal`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from tests.conftest import START_TIMEOUT_S, TinyServer


@pytest.fixture(scope="session")
def causal_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    """`paligemma serve --attention causal` on the tiny model: vLLM's plain causal mask, for comparison."""
    log_path = tmp_path_factory.mktemp("logs") / "vllm-tiny-causal.log"
    the_plan = serve.plan(ServeOptions(model=str(tiny_model_dir), port=free_port(), attention="causal"), device="cpu")
    with serve.running(the_plan, echo=False, log_path=log_path, timeout_s=START_TIMEOUT_S) as server:
        yield TinyServer(
            base_url=the_plan.command.base_url,
            model=the_plan.command.served_model_name,
            model_dir=tiny_model_dir,
            pid=server.pid,
            log_path=log_path,
        )
