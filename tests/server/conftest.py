"""The one extra server of tests/server: the tiny model served with `--attention causal`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.process import free_port
from server.vllm_command import ServeOptions
from tests.conftest import TinyServer, serving


@pytest.fixture(scope="session")
def causal_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    """`paligemma serve --attention causal` on the tiny model: vLLM's plain causal mask, for comparison."""
    log_path = tmp_path_factory.mktemp("logs") / "vllm-tiny-causal.log"
    with serving(ServeOptions(model=str(tiny_model_dir), port=free_port(), attention="causal"), log_path) as server:
        yield server
