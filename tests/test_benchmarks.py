"""The benchmarks measure what they say they measure: pure pieces of their set-up."""

from __future__ import annotations

import pytest

from benchmarks.serving import SERVED


@pytest.mark.parametrize("name", list(SERVED))
def test_a_served_configuration_keeps_its_own_vllm_arguments(name: str) -> None:
    """`--serve-arg` adds to a configuration's vLLM arguments; it once replaced them, so that
    `prefill-8k` was measured as the default server (docs/benchmarks.md)."""
    configuration = SERVED[name]
    options = configuration.serve_options("/checkpoints/tiny", 8123, ("--seed", "1"))
    assert options.vllm_args == (*configuration.options.vllm_args, "--seed", "1")
    assert (options.model, options.port, options.eager) == ("/checkpoints/tiny", 8123, configuration.options.eager)


def test_the_token_budget_configuration_raises_the_budget() -> None:
    options = SERVED["prefill-8k"].serve_options("/checkpoints/tiny", 8123)
    assert options.vllm_args == ("--max-num-batched-tokens", "8192")
