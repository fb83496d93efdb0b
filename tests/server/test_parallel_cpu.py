"""vLLM's own tensor and data parallelism, for real on this machine's cores (tiny model, two workers).

Each worker gets its own share of the cores through VLLM_CPU_OMP_THREADS_BIND (vLLM alone refuses
to place two CPU workers on a one-NUMA-node machine). See docs/deploy.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import openai
import pytest

from server import serve
from server.process import VllmServer, free_port
from server.vllm_command import ServeOptions, cpu_binding
from tests.conftest import START_TIMEOUT_S
from tests.images import data_uri, gradient_image
from tests.reference import TransformersReference

CPUS = tuple(sorted(os.sched_getaffinity(0)))
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(len(CPUS) < 2, reason="two CPU workers need at least two CPUs to run on"),
]


class Started(NamedTuple):
    plan: serve.Plan
    server: VllmServer
    log_path: Path


def ask(base_url: str, model: str, seed: int) -> list[int]:
    image = gradient_image(160, 120, seed=seed)
    with openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0) as client:
        choice = client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_uri(image)}},
                        {"type": "text", "text": "detect cat"},
                    ],
                }
            ],
            max_tokens=8,
            temperature=0,
            extra_body={"return_token_ids": True},
        ).choices[0]
    return [int(t) for t in choice.token_ids]


PARALLEL = {"tensor-parallel-2": {"tensor_parallel_size": 2}, "data-parallel-2": {"data_parallel_size": 2}}


@pytest.fixture(scope="module")
def parallel_servers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    """Both servers, started at once (their starts overlap); each test waits for its own."""
    logs = tmp_path_factory.mktemp("logs")
    with contextlib.ExitStack() as stack:
        started = {}
        for name, options in PARALLEL.items():
            the_plan = serve.plan(
                ServeOptions(model=str(tiny_model_dir), port=free_port(), eager=True, **options), device="cpu"
            )
            log_path = logs / f"vllm-{name}.log"
            server = stack.enter_context(serve.started(the_plan, echo=False, log_path=log_path))
            started[name] = Started(the_plan, server, log_path)
        yield started


@pytest.mark.parametrize("name", list(PARALLEL))
def test_parallel_server_answers_like_transformers(
    tiny_model_dir: Path, parallel_servers: dict[str, Started], name: str
) -> None:
    the_plan, server, log_path = parallel_servers[name]
    assert the_plan.command.env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_binding(CPUS, 2)  # this machine's CPUs, halved
    reference = TransformersReference(tiny_model_dir)
    expected = {
        seed: [s.token_id for s in reference.greedy(gradient_image(160, 120, seed=seed), "detect cat", 8, "prefix")]
        for seed in range(6)
    }
    server.wait_until_healthy(START_TIMEOUT_S)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = dict(
            zip(
                expected,
                pool.map(lambda s: ask(the_plan.command.base_url, the_plan.command.served_model_name, s), expected),
                strict=True,
            )
        )
    assert answers == expected
    log = log_path.read_text()
    if "data_parallel_size" in PARALLEL[name]:
        assert "EngineCore_DP0" in log and "EngineCore_DP1" in log  # two engines served
    else:
        assert "world_size=2" in log
