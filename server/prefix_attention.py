"""PaliGemma's prefix-LM attention inside vLLM: the attention backends the plugin substitutes.

Imported by vLLM only (through the lazy class paths `server.vllm_plugin` registers), in the
processes that build attention layers; it needs vLLM and torch.

- CPU (`PrefixLMCPUAttentionBackend`, in place of CPU_ATTN): prefill rows of a prefix run vLLM's
  own CPU kernel non-causally over keys `[0, P)` without a window, answer rows run it causally
  with the layer's window (`server.prefix_plan`); decode-only steps are untouched. The kernel
  reads the ISA-packed KV cache and applies Gemma 2's attention-logit softcap itself.
- GPU (`PrefixLMTritonAttentionBackend`, in place of TRITON_ATTN): vLLM's multimodal prefix
  range of each request, the image span, becomes its whole prompt `[0, P)`.

P, each request's prompt length, comes from the model runner that is executing the step
(`install_runner_hook`); runs outside `execute_model` (profiling, warm-up) stay causal.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
import torch
from vllm import _custom_ops as ops
from vllm import envs
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionLayer, AttentionType, CommonAttentionMetadata
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
    CPUAttentionMetadata,
    CPUAttentionMetadataBuilder,
)
from vllm.v1.kv_cache_interface import AttentionSpec

from server.prefix_plan import Pass, prefix_plan

# Under "vllm." so that vLLM's own log configuration prints it, with the process name.
logger = init_logger("vllm.paligemma_prefix_lm")

PALIGEMMA_MODEL_TYPE = "paligemma"


class _RunnerState(threading.local):
    runner: Any = None


_STATE = _RunnerState()
_HOOK_LOCK = threading.Lock()


def install_runner_hook() -> None:
    """Let builders see the runner executing the step (its batch knows every request's prompt length)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    with _HOOK_LOCK:
        original = GPUModelRunner.execute_model
        if getattr(original, "_paligemma_prefix_hook", False):
            return

        @functools.wraps(original)
        def execute_model(self: Any, *args: Any, **kwargs: Any) -> Any:
            _STATE.runner = self
            try:
                return original(self, *args, **kwargs)
            finally:
                _STATE.runner = None

        execute_model._paligemma_prefix_hook = True  # type: ignore[attr-defined]
        GPUModelRunner.execute_model = execute_model  # type: ignore[method-assign]


def prompt_lens(common: CommonAttentionMetadata) -> np.ndarray[Any, np.dtype[np.int64]] | None:
    """Each batch row's prompt length, or None outside a real step (then the batch stays causal)."""
    num_reqs = common.num_reqs
    if common.rswa_prefix_lens is not None:  # the V2 model runner passes prompt lengths here
        lens: np.ndarray[Any, np.dtype[np.int64]] = common.rswa_prefix_lens[:num_reqs].cpu().numpy().astype(np.int64)
        return lens
    runner = _STATE.runner
    if runner is None:
        return None
    return np.asarray(runner.input_batch.num_prompt_tokens[:num_reqs], dtype=np.int64)


def is_paligemma_decoder(vllm_config: VllmConfig, kv_cache_spec: AttentionSpec) -> bool:
    from vllm.v1.kv_cache_interface import CrossAttentionSpec, EncoderOnlyAttentionSpec

    model_type = getattr(vllm_config.model_config.hf_config, "model_type", None)
    return model_type == PALIGEMMA_MODEL_TYPE and not isinstance(
        kv_cache_spec, CrossAttentionSpec | EncoderOnlyAttentionSpec
    )


def check_settings(vllm_config: VllmConfig, kv_cache_spec: AttentionSpec) -> None:
    """Refuse settings under which the prefix would not be attended exactly, naming the fix
    (`paligemma serve --attention prefix` sets each; a hand-written vLLM command may not)."""
    check_unsplit_prefill(vllm_config)
    if getattr(vllm_config, "use_v2_model_runner", False):
        raise ValueError(
            "PaliGemma prefix attention reads prompt lengths from vLLM's V1 model runner: set "
            "VLLM_USE_V2_MODEL_RUNNER=0 (`paligemma serve --attention prefix` does), or use `--attention causal`."
        )
    from vllm.v1.kv_cache_interface import SlidingWindowSpec

    # Blocks managed by window (vLLM promotes windowed layers to full blocks only beside full layers).
    window = kv_cache_spec.sliding_window if isinstance(kv_cache_spec, SlidingWindowSpec) else None
    max_model_len = vllm_config.model_config.max_model_len
    if window is not None and window < max_model_len and vllm_config.cache_config.enable_prefix_caching:
        raise ValueError(
            f"every layer of this model attends through a sliding window of {window} tokens, so vLLM caches its "
            "prefixes by window and a cache hit would miss keys the two-way prefix reads: serve with "
            "--no-enable-prefix-caching (`paligemma serve --attention prefix` does), or use `--attention causal`."
        )


def check_unsplit_prefill(vllm_config: VllmConfig) -> None:
    """Refuse scheduler settings that split a prompt across steps (a split prefix cannot be exact)."""
    scheduler = vllm_config.scheduler_config
    if scheduler.enable_chunked_prefill or (scheduler.long_prefill_token_threshold or 0) > 0:
        raise ValueError(
            "PaliGemma prefix attention needs whole prompts in one step: serve with --no-enable-chunked-prefill "
            "and no --long-prefill-token-threshold (`paligemma serve --attention prefix` does), "
            "or use `--attention causal`."
        )


# --- CPU ------------------------------------------------------------------------------------


@dataclass
class CPUPass:
    """A `Pass` as the tensors one kernel call takes (`rows` None: the whole batch in order)."""

    rows: torch.Tensor | None
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    scheduler_metadata: torch.Tensor
    causal: bool


@dataclass(frozen=True)
class KernelShape:
    """What vLLM's CPU scheduler metadata depends on, besides the rows."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    window: int  # the KV group's shared window, -1 for none
    isa: str
    kv_cache_dtype: str


def cpu_pass(
    plan_pass: Pass, block_table: torch.Tensor, num_tokens: int, shape: KernelShape, *, causal: bool
) -> CPUPass:
    """The tensors and scheduler metadata of one kernel call (built once a step, shared by the layers)."""
    query_start_loc = torch.from_numpy(plan_pass.query_start_loc)
    seq_lens = torch.from_numpy(plan_pass.seq_lens)
    scheduler_metadata = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=int(plan_pass.seq_lens.size),
        num_heads=shape.num_heads,
        num_kv_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        seq_lens=seq_lens,
        dtype=shape.dtype,
        query_start_loc=query_start_loc,
        causal=causal,
        sliding_window_size=shape.window if causal else -1,
        isa=shape.isa,
        enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
        dynamic_causal=None,
        kv_cache_dtype=shape.kv_cache_dtype,
    )
    return CPUPass(
        rows=None if plan_pass.covers(num_tokens) else torch.from_numpy(plan_pass.rows),
        query_start_loc=query_start_loc,
        seq_lens=seq_lens,
        block_table=block_table.index_select(0, torch.from_numpy(plan_pass.requests)),
        scheduler_metadata=scheduler_metadata,
        causal=causal,
    )


def attend(
    kernel_pass: CPUPass,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    output: torch.Tensor,
    *,
    scale: float,
    softcap: float,
    sliding_window: int,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    kv_cache_dtype: str = "auto",
) -> None:
    """Run vLLM's CPU kernel on the pass's rows of `query`, writing those rows of `output`."""
    rows = kernel_pass.rows
    num_rows = int(kernel_pass.query_start_loc[-1])
    pass_query = query[:num_rows] if rows is None else query.index_select(0, rows)
    pass_output = output[:num_rows] if rows is None else output.new_empty(pass_query.shape)
    ops.cpu_attention_with_kv_cache(
        query=pass_query,
        key_cache=key_cache,
        value_cache=value_cache,
        output=pass_output,
        query_start_loc=kernel_pass.query_start_loc,
        seq_lens=kernel_pass.seq_lens,
        scale=scale,
        causal=kernel_pass.causal,
        alibi_slopes=alibi_slopes,
        # The prefix is not windowed: transformers' mask is (causal AND window) OR prefix.
        sliding_window=sliding_window if kernel_pass.causal else -1,
        block_table=kernel_pass.block_table,
        softcap=softcap,
        scheduler_metadata=kernel_pass.scheduler_metadata,
        s_aux=sinks,
        dynamic_causal=None,
        k_scale=k_scale,
        v_scale=v_scale,
        kv_cache_dtype=kv_cache_dtype,
    )
    if rows is not None:
        output.index_copy_(0, rows, pass_output)


@dataclass
class PrefixLMCPUMetadata(CPUAttentionMetadata):
    prefix_pass: CPUPass | None = None
    answer_pass: CPUPass | None = None


class PrefixLMCPUMetadataBuilder(CPUAttentionMetadataBuilder):
    def __init__(
        self, kv_cache_spec: AttentionSpec, layer_names: list[str], vllm_config: VllmConfig, device: torch.device
    ) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.prefix_lm = is_paligemma_decoder(vllm_config, kv_cache_spec)
        self.shape = KernelShape(
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            cast(torch.dtype, self.dtype),  # resolved to a torch dtype by now
            self.window_size,
            self.isa,
            self.kv_cache_dtype,
        )
        if self.prefix_lm:
            check_settings(vllm_config, kv_cache_spec)
            install_runner_hook()
            logger.info("PaliGemma prefix-LM attention on for %d CPU attention layers.", len(layer_names))

    def build(
        self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata, fast_build: bool = False
    ) -> CPUAttentionMetadata:
        metadata = super().build(common_prefix_len, common_attn_metadata, fast_build)
        if not self.prefix_lm or metadata.causal is not True:
            return metadata
        lens = prompt_lens(common_attn_metadata)
        if lens is None:
            return metadata
        num_reqs = common_attn_metadata.num_reqs
        plan = prefix_plan(
            common_attn_metadata.query_start_loc_cpu[: num_reqs + 1].numpy(),
            common_attn_metadata.seq_lens[:num_reqs].cpu().numpy(),
            lens,
        )
        if plan is None:
            return metadata
        num_tokens, block_table = metadata.num_actual_tokens, metadata.block_table
        answer = plan.answer
        return PrefixLMCPUMetadata(
            **{f.name: getattr(metadata, f.name) for f in fields(metadata)},
            prefix_pass=cpu_pass(plan.prefix, block_table, num_tokens, self.shape, causal=False),
            answer_pass=None if answer is None else cpu_pass(answer, block_table, num_tokens, self.shape, causal=True),
        )


class PrefixLMCPUAttentionImpl(CPUAttentionBackendImpl):
    def forward(
        self,
        layer: AttentionLayer,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: CPUAttentionMetadata | None,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not isinstance(attn_metadata, PrefixLMCPUMetadata) or attn_metadata.prefix_pass is None:
            return super().forward(
                layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale
            )
        if output_scale is not None or output_block_scale is not None or self.attn_type != AttentionType.DECODER:
            raise NotImplementedError("PaliGemma prefix attention covers unquantized decoder self-attention only")
        num_blocks, num_kv_heads, block_size, _ = kv_cache.size()
        key_cache, value_cache = kv_cache.view((num_blocks, num_kv_heads, block_size * 2, -1)).chunk(2, dim=2)
        for kernel_pass in (attn_metadata.prefix_pass, attn_metadata.answer_pass):
            if kernel_pass is not None:
                attend(
                    kernel_pass,
                    query,
                    key_cache,
                    value_cache,
                    output,
                    scale=self.scale,
                    softcap=self.logits_soft_cap,
                    sliding_window=self.sliding_window,
                    alibi_slopes=cast(torch.Tensor | None, self.alibi_slopes),  # a tensor since __init__
                    sinks=self.sinks,
                    k_scale=layer._k_scale_float,
                    v_scale=layer._v_scale_float,
                    kv_cache_dtype=self.kv_cache_dtype,
                )
        return output


class PrefixLMCPUAttentionBackend(CPUAttentionBackend):
    """CPU_ATTN with PaliGemma's prefix-LM mask; the same name, KV layout and kernels."""

    @staticmethod
    def get_impl_cls() -> type[CPUAttentionBackendImpl]:
        return PrefixLMCPUAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[CPUAttentionMetadataBuilder]:
        return PrefixLMCPUMetadataBuilder


# --- GPU (Triton) -----------------------------------------------------------------------------


def _triton_classes() -> tuple[type[Any], type[Any]]:
    from vllm.v1.attention.backends.triton_attn import TritonAttentionBackend, TritonAttentionMetadataBuilder

    return TritonAttentionBackend, TritonAttentionMetadataBuilder


def whole_prompt_ranges(lens: np.ndarray[Any, np.dtype[np.int64]]) -> dict[int, list[tuple[int, int]]]:
    """vLLM's inclusive multimodal prefix ranges, one per request: its whole prompt."""
    return {i: [(0, int(p) - 1)] for i, p in enumerate(lens) if p > 0}


def _make_triton_backend() -> type[Any]:
    backend_base, builder_base = _triton_classes()

    class PrefixLMTritonMetadataBuilder(builder_base):  # type: ignore[misc,valid-type]
        def __init__(
            self, kv_cache_spec: AttentionSpec, layer_names: list[str], vllm_config: VllmConfig, device: Any
        ) -> None:
            super().__init__(kv_cache_spec, layer_names, vllm_config, device)
            self.prefix_lm = is_paligemma_decoder(vllm_config, kv_cache_spec)
            if self.prefix_lm:
                check_settings(vllm_config, kv_cache_spec)
                install_runner_hook()
                logger.info("PaliGemma prefix-LM attention on for %d Triton attention layers.", len(layer_names))

        def build(
            self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata, fast_build: bool = False
        ) -> Any:
            lens = prompt_lens(common_attn_metadata) if self.prefix_lm else None
            if lens is not None:
                common_attn_metadata = common_attn_metadata.replace(mm_req_doc_ranges=whole_prompt_ranges(lens))
            return super().build(common_prefix_len, common_attn_metadata, fast_build)

    class PrefixLMTritonAttentionBackend(backend_base):  # type: ignore[misc,valid-type]
        @staticmethod
        def get_builder_cls() -> type[Any]:
            return PrefixLMTritonMetadataBuilder

    return PrefixLMTritonAttentionBackend


def __getattr__(name: str) -> Any:
    # The Triton backend imports triton: build it only when a GPU process asks for it.
    if name == "PrefixLMTritonAttentionBackend":
        backend = _make_triton_backend()
        globals()[name] = backend
        return backend
    raise AttributeError(name)
