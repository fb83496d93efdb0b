"""What `serve` says when vLLM stops: the advice matches the failure, not vLLM's ordinary log lines."""

from __future__ import annotations

import pytest

from server.process import diagnose

# Lines every CPU start logs before anything can fail.
STARTED = (
    "INFO 12-05 21:10:02 [cpu_worker.py:60] CPU KV cache size: 1.00 GiB\n"
    "INFO 12-05 21:10:02 [kv_cache_utils.py:1087] GPU KV cache size: 11,648 tokens\n"
)


@pytest.mark.parametrize(
    ("tail", "advice"),
    [
        pytest.param(
            STARTED + "RuntimeError: The size of tensor a (64) must match the size of tensor b (128)",
            None,
            id="a-failure-after-the-cache-lines-is-not-called-a-cache-problem",
        ),
        pytest.param(
            "ValueError: To serve at least one request with the model's max seq len (8192), (4.0 GiB KV cache is "
            "needed, which is larger than the available KV cache memory (1.0 GiB).",
            "the KV cache is too small",
            id="kv-cache-too-small",
        ),
        pytest.param(STARTED + "OSError: [Errno 98] Address already in use", "the port is taken", id="port"),
        pytest.param("ModuleNotFoundError: No module named 'vllm'", "a package is missing", id="missing-package"),
    ],
)
def test_the_advice_names_the_failure(tail: str, advice: str | None) -> None:
    found = diagnose(tail)
    assert (found is None) if advice is None else (found is not None and found.startswith(advice))
