"""vLLM's CPU attention kernel, driven as the prefix-LM backend drives it, against PaliGemma's mask in torch.

No server: one mixed batch (a decode, a fresh prefill, the tail after a prefix-cache hit, the
recompute of a preempted request) over a paged KV cache written by vLLM's own cache op. The
mask is transformers' (`(k <= q and k > q - window) or (q < P and k < P)`), with Gemma 2's
attention-logit softcap; a window shorter than the prompts stands for the 896 px checkpoints,
whose 4,096 image tokens fill Gemma 2's 4,096-token window.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from server.prefix_plan import prefix_plan

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 4, 2, 32, 32
SOFTCAP = 50.0
SCALE = HEAD_DIM**-0.5


@pytest.fixture(scope="module")
def vllm_ops() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit deprecations raised while vLLM imports
        ops = pytest.importorskip("vllm._custom_ops", reason="needs vLLM")
    if not hasattr(torch.ops._C, "cpu_attention_with_kv_cache"):
        pytest.skip("this vLLM build has no CPU attention kernels (a GPU build)")
    return ops


@pytest.fixture(scope="module")
def backend(vllm_ops: ModuleType) -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from server import prefix_attention

    return prefix_attention


def isa_for(dtype: torch.dtype) -> str:
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    isa: str = _get_attn_isa(dtype, BLOCK, HEAD_DIM, "auto")
    return isa


# (prompt length P, positions already in the cache, positions after this step)
BATCH = {
    "decode": (40, 74, 75),
    "fresh-prefill": (100, 0, 100),
    "cache-hit-tail": (70, 64, 70),
    "preempted-recompute": (50, 0, 58),
}


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, prompt: int, window: int
) -> torch.Tensor:
    """PaliGemma's attention for the query rows at `positions`, keys and values at 0..len-1."""
    keys = torch.arange(k.shape[0])[None, :]
    rows = positions[:, None]
    allowed = (keys <= rows) & ((keys > rows - window) if window > 0 else True)
    allowed |= (rows < prompt) & (keys < prompt)
    repeat = HEADS // KV_HEADS
    scores = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(repeat, 1)) * SCALE
    scores = SOFTCAP * torch.tanh(scores / SOFTCAP)
    weights = scores.masked_fill(~allowed[None], float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", weights, v.repeat_interleave(repeat, 1))


@pytest.mark.parametrize("window", [-1, 32], ids=["global-layer", "sliding-layer-window-shorter-than-prompt"])
def test_prefix_and_answer_passes_equal_paligemmas_mask(vllm_ops: Any, backend: Any, window: int) -> None:
    torch.manual_seed(0)
    dtype = torch.float32
    isa = isa_for(dtype)
    blocks_per_request = 4
    kv_cache = torch.zeros(len(BATCH) * blocks_per_request, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=dtype)
    key_cache, value_cache = kv_cache.view(kv_cache.shape[0], KV_HEADS, BLOCK * 2, HEAD_DIM).chunk(2, dim=2)
    # Blocks handed out in reverse so that block ids and request order differ.
    block_table = torch.tensor(
        [[len(BATCH) * blocks_per_request - 1 - (i * blocks_per_request + b) for b in range(blocks_per_request)]
         for i in range(len(BATCH))],
        dtype=torch.int32,
    )  # fmt: skip
    keys, values, queries, row_positions = [], [], [], []
    for i, (_, cached, end) in enumerate(BATCH.values()):
        k, v = torch.randn(end, KV_HEADS, HEAD_DIM), torch.randn(end, KV_HEADS, HEAD_DIM)
        slots = torch.tensor([int(block_table[i, p // BLOCK]) * BLOCK + p % BLOCK for p in range(end)])
        vllm_ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, slots, isa)
        keys.append(k)
        values.append(v)
        queries.append(torch.randn(end - cached, HEADS, HEAD_DIM))
        row_positions.append(torch.arange(cached, end))
    query = torch.cat(queries)
    lengths = [end - cached for _, cached, end in BATCH.values()]
    query_start_loc = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    seq_lens = np.array([end for *_, end in BATCH.values()], dtype=np.int32)
    prompts = np.array([prompt for prompt, *_ in BATCH.values()], dtype=np.int64)

    plan = prefix_plan(query_start_loc, seq_lens, prompts)
    assert plan is not None and plan.answer is not None
    shape = backend.KernelShape(HEADS, KV_HEADS, HEAD_DIM, dtype, window, isa, "auto")
    output = torch.full_like(query, float("nan"))
    for plan_pass, causal in ((plan.prefix, False), (plan.answer, True)):
        kernel_pass = backend.cpu_pass(plan_pass, block_table, query.shape[0], shape, causal=causal)
        backend.attend(
            kernel_pass, query, key_cache, value_cache, output, scale=SCALE, softcap=SOFTCAP, sliding_window=window
        )

    for i, name in enumerate(BATCH):
        rows = slice(int(query_start_loc[i]), int(query_start_loc[i + 1]))
        expected = reference(queries[i], keys[i], values[i], row_positions[i], int(prompts[i]), window)
        torch.testing.assert_close(
            output[rows], expected, atol=2e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_the_stock_causal_kernel_differs_on_prefix_rows(vllm_ops: Any, backend: Any) -> None:
    """The comparison above can fail: vLLM's own causal call gives other values on a prefix."""
    torch.manual_seed(1)
    dtype = torch.float32
    isa = isa_for(dtype)
    kv_cache = torch.zeros(2, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=dtype)
    key_cache, value_cache = kv_cache.view(2, KV_HEADS, BLOCK * 2, HEAD_DIM).chunk(2, dim=2)
    k, v, q = torch.randn(40, KV_HEADS, HEAD_DIM), torch.randn(40, KV_HEADS, HEAD_DIM), torch.randn(40, HEADS, HEAD_DIM)
    vllm_ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, torch.arange(40), isa)
    plan = prefix_plan(np.array([0, 40], dtype=np.int32), np.array([40], dtype=np.int32), np.array([40]))
    assert plan is not None
    block_table = torch.tensor([[0, 1]], dtype=torch.int32)
    shape = backend.KernelShape(HEADS, KV_HEADS, HEAD_DIM, dtype, -1, isa, "auto")
    outputs = {}
    for causal in (False, True):
        outputs[causal] = torch.empty_like(q)
        kernel_pass = backend.cpu_pass(plan.prefix, block_table, 40, shape, causal=causal)
        backend.attend(
            kernel_pass, q, key_cache, value_cache, outputs[causal], scale=SCALE, softcap=SOFTCAP, sliding_window=-1
        )
    prefix_expected = reference(q, k, v, torch.arange(40), 40, -1)
    torch.testing.assert_close(outputs[False], prefix_expected, atol=2e-5, rtol=1e-5)
    assert (outputs[True] - prefix_expected).abs().max() > 0.1
    # The last prefix row sees every key either way.
    torch.testing.assert_close(outputs[True][-1], prefix_expected[-1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("chunked", "threshold"),
    [
        pytest.param(True, 0, id="chunked-prefill"),
        pytest.param(False, 128, id="long-prefill-threshold"),
    ],
)
def test_settings_that_split_a_prompt_are_refused(backend: Any, chunked: bool, threshold: int) -> None:
    """The backend refuses to start rather than attend a split prefix inexactly."""
    from types import SimpleNamespace

    config = SimpleNamespace(
        scheduler_config=SimpleNamespace(enable_chunked_prefill=chunked, long_prefill_token_threshold=threshold)
    )
    with pytest.raises(ValueError, match="--no-enable-chunked-prefill"):
        backend.check_unsplit_prefill(config)
    backend.check_unsplit_prefill(
        SimpleNamespace(scheduler_config=SimpleNamespace(enable_chunked_prefill=False, long_prefill_token_threshold=0))
    )


def _config(*, v2: bool = False, prefix_caching: bool = True, max_model_len: int = 1024) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        scheduler_config=SimpleNamespace(enable_chunked_prefill=False, long_prefill_token_threshold=0),
        use_v2_model_runner=v2,
        model_config=SimpleNamespace(max_model_len=max_model_len),
        cache_config=SimpleNamespace(enable_prefix_caching=prefix_caching),
    )


def test_settings_under_which_the_prefix_would_not_be_exact_are_refused(backend: Any) -> None:
    """vLLM's V2 runner (its default on GPUs) passes no prompt lengths to PaliGemma; a model whose
    every layer is windowed keeps windowed KV blocks, which a prefix-cache hit holds freed."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    shape = {"block_size": 16, "num_kv_heads": 1, "head_size": 64, "dtype": torch.float32}
    windowed, promoted = SlidingWindowSpec(**shape, sliding_window=100), FullAttentionSpec(**shape, sliding_window=100)
    with pytest.raises(ValueError, match="VLLM_USE_V2_MODEL_RUNNER=0"):
        backend.check_settings(_config(v2=True), promoted)
    with pytest.raises(ValueError, match="--no-enable-prefix-caching"):
        backend.check_settings(_config(), windowed)
    backend.check_settings(_config(prefix_caching=False), windowed)
    backend.check_settings(_config(max_model_len=100), windowed)  # no prompt outgrows the window
    backend.check_settings(_config(), promoted)  # beside full layers, windowed layers keep whole blocks
