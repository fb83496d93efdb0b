"""vLLM's own tensor and data parallelism, for real on this machine's cores (tiny model, two workers).

Each worker gets its own share of the cores through VLLM_CPU_OMP_THREADS_BIND (vLLM alone refuses
to place two CPU workers on a one-NUMA-node machine). See docs/deploy.md.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import openai
import pytest

from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions, cpu_binding
from tests.conftest import START_TIMEOUT_S
from tests.images import data_uri, gradient_image
from tests.reference import TransformersReference

CPUS = tuple(sorted(os.sched_getaffinity(0)))
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(len(CPUS) < 2, reason="two CPU workers need at least two CPUs to run on"),
]


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


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"tensor_parallel_size": 2}, id="tensor-parallel-2"),
        pytest.param({"data_parallel_size": 2}, id="data-parallel-2"),
    ],
)
def test_parallel_server_answers_like_transformers(
    tiny_model_dir: Path, tmp_path: Path, options: dict[str, int]
) -> None:
    the_plan = serve.plan(ServeOptions(model=str(tiny_model_dir), port=free_port(), **options), device="cpu")
    assert the_plan.command.env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_binding(CPUS, 2)  # this machine's CPUs, halved
    log_path = tmp_path / "vllm.log"
    reference = TransformersReference(tiny_model_dir)
    expected = {
        seed: [s.token_id for s in reference.greedy(gradient_image(160, 120, seed=seed), "detect cat", 8, "prefix")]
        for seed in range(6)
    }
    with serve.running(the_plan, echo=False, log_path=log_path, timeout_s=START_TIMEOUT_S):
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
    if "data_parallel_size" in options:
        assert "EngineCore_DP0" in log and "EngineCore_DP1" in log  # two engines served
    else:
        assert "world_size=2" in log
