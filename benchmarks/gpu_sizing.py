"""GPU sizing and throughput on paper, per preset: image tokens, FLOPs, memory, the H100 bound.

    .venv/bin/python -m benchmarks.gpu_sizing [--prompt-tokens 8] [--answer-tokens 32] [--no-cpu]

Everything printed is derived, not measured on a GPU: parameter counts from the published
architectures (Gemma 2 2B/9B/27B, SigLIP So400m/14), FLOPs as 2 per weight per token plus
attention, an H100 SXM's datasheet peaks (dense bf16 FLOP/s, HBM bandwidth, memory), and
the usual roofline reasoning. The bound is what no serving stack can beat on that GPU; real
servers reach a fraction of it. The one measured figure, with `--no-cpu` left out, is this
machine's float32 matmul rate, which turns the same FLOPs into a CPU bound.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from benchmarks.common import print_table
from server.presets import PRESETS, Preset

# H100 SXM5 80 GB datasheet: dense bf16 tensor-core peak (no sparsity), HBM3 bandwidth.
H100_BF16_FLOPS = 989e12
H100_HBM_BYTES_S = 3.35e12
H100_MEMORY_BYTES = 80e9
GPU_UTILISATION = 0.9  # vLLM's default --gpu-memory-utilization
BF16_BYTES = 2
MAX_NUM_SEQS = 256  # vLLM's default batch cap on a GPU
PATCH_PX = 14


@dataclass(frozen=True)
class Transformer:
    """The shape of a decoder (or encoder) stack, as in its published config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool
    vocab: int = 0

    @property
    def layer_parameters(self) -> int:
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return q_o + k_v + mlp

    @property
    def stack_parameters(self) -> int:
        """Weights every token multiplies (embeddings excluded)."""
        return self.layers * self.layer_parameters

    def forward_flops(self, tokens: int, attended: int) -> float:
        """FLOPs of `tokens` tokens through the stack, each attending to `attended` positions."""
        dense = 2 * self.stack_parameters * tokens
        attention = 4 * self.layers * self.heads * self.head_dim * tokens * attended  # QK^T and AV
        return dense + attention

    def kv_bytes_per_token(self, dtype_bytes: int = BF16_BYTES) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


# Published configs (config.json of google/gemma-2-*-it and google/siglip-so400m-patch14-*).
SIGLIP_SO400M = Transformer(
    layers=27, hidden=1152, intermediate=4304, heads=16, kv_heads=16, head_dim=72, gated_mlp=False
)
GEMMA2 = {
    "3b": Transformer(26, 2304, 9216, 8, 4, 256, gated_mlp=True, vocab=257_216),
    "10b": Transformer(42, 3584, 14336, 16, 8, 256, gated_mlp=True, vocab=257_216),
    "28b": Transformer(46, 4608, 36864, 32, 16, 128, gated_mlp=True, vocab=257_216),
}


@dataclass(frozen=True)
class Sizing:
    preset: Preset
    prompt_tokens: int  # image tokens + <bos> + prompt + "\n"
    vision_gflop: float
    prefill_gflop: float
    decode_gflop_per_token: float
    parameters_b: float
    kv_mib_per_request: float
    batch: int  # sequences whose KV cache fits beside the weights on one H100, capped at MAX_NUM_SEQS
    prefill_ms: float  # compute bound of one request's prefill (vision + language)
    decode_step_ms: float  # one decode step of the whole batch: the slower of reading and computing
    requests_s: float  # bound on requests/s of one H100 for prompt + answer


def size(preset: Preset, prompt_tokens: int, answer_tokens: int) -> Sizing:
    lm = GEMMA2[preset.name.split("-")[0]]
    patches = (preset.image_size_px // PATCH_PX) ** 2
    assert patches == preset.image_tokens, (preset.name, patches)
    prompt = patches + 1 + prompt_tokens + 1
    vision = SIGLIP_SO400M.forward_flops(patches, patches) + 2 * SIGLIP_SO400M.hidden * lm.hidden * patches
    # PaliGemma's prefix attends both ways: every prefix token sees the whole prefix.
    prefill = vision + lm.forward_flops(prompt, prompt) + 2 * lm.hidden * lm.vocab  # logits of the last position
    mean_context = prompt + answer_tokens / 2
    decode = lm.forward_flops(1, round(mean_context)) + 2 * lm.hidden * lm.vocab
    parameters = (
        SIGLIP_SO400M.stack_parameters
        + 3 * PATCH_PX**2 * SIGLIP_SO400M.hidden
        + SIGLIP_SO400M.hidden * lm.hidden
        + lm.stack_parameters
        + lm.vocab * lm.hidden
    )
    weight_bytes = parameters * BF16_BYTES
    kv_request = lm.kv_bytes_per_token() * (prompt + answer_tokens)
    fits = int((H100_MEMORY_BYTES * GPU_UTILISATION - weight_bytes) // kv_request)
    batch = max(0, min(MAX_NUM_SEQS, fits))
    prefill_s = prefill / H100_BF16_FLOPS
    if batch == 0:
        return Sizing(preset, prompt, vision / 1e9, prefill / 1e9, decode / 1e9, parameters / 1e9, 0, 0, 0, 0, 0)
    # A decode step reads every weight once for the whole batch and each sequence's KV cache.
    step_read_s = (weight_bytes + batch * lm.kv_bytes_per_token() * mean_context) / H100_HBM_BYTES_S
    step_compute_s = batch * decode / H100_BF16_FLOPS
    step_s = max(step_read_s, step_compute_s)
    per_request_s = prefill_s + answer_tokens * step_s / batch
    return Sizing(
        preset,
        prompt,
        vision / 1e9,
        prefill / 1e9,
        decode / 1e9,
        parameters / 1e9,
        kv_request / 2**20,
        batch,
        prefill_s * 1e3,
        step_s * 1e3,
        1 / per_request_s,
    )


def cpu_matmul_gflops(seconds: float = 2.0) -> float:
    """This machine's float32 matmul rate per core: FLOPs over CPU time (numpy's BLAS, best of a few
    rounds), which other work on the machine moves much less than wall time."""
    import numpy as np

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.process_time()
        a @ a
        spent = time.process_time() - started
        if spent > 0:
            best = max(best, 2 * n**3 / spent)
    return best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=8, help="text tokens of the prompt, e.g. 'detect cat'")
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--no-cpu", action="store_true", help="skip measuring this machine's matmul rate")
    args = parser.parse_args()
    sizings = [
        size(p, args.prompt_tokens, args.answer_tokens)
        for p in PRESETS.values()
        if "-mix-" in p.name or p.image_size_px == 896
    ]
    print_table(
        f"PaliGemma 2 presets on paper (DERIVED, not measured): one request = image + {args.prompt_tokens} prompt "
        f"tokens, {args.answer_tokens} answer tokens; bf16 on one H100 SXM 80 GB "
        f"({H100_BF16_FLOPS / 1e12:.0f} TFLOP/s dense bf16, {H100_HBM_BYTES_S / 1e12:.2f} TB/s HBM)",
        [
            "preset",
            "params (B)",
            "in presets.py",
            "prompt tokens",
            "vision GFLOP",
            "prefill GFLOP (vision + LM)",
            "decode GFLOP/token",
            "KV MiB/request",
            "batch that fits",
            "prefill bound (ms)",
            "decode step at that batch (ms)",
            "H100 bound (requests/s)",
            "prefill share",
        ],
        [
            [
                f"`{s.preset.name}`",
                f"{s.parameters_b:.2f}",
                f"{s.preset.parameters_b:.2f}",
                f"{s.prompt_tokens}",
                f"{s.vision_gflop:,.0f}",
                f"{s.prefill_gflop:,.0f}",
                f"{s.decode_gflop_per_token:.1f}",
                f"{s.kv_mib_per_request:.0f}",
                f"{s.batch}",
                f"{s.prefill_ms:.2f}",
                f"{s.decode_step_ms:.2f}",
                f"{s.requests_s:,.0f}" if s.batch else "does not fit",
                f"{s.prefill_ms * s.requests_s / 1e3:.0%}" if s.batch else "-",
            ]
            for s in sizings
        ],
    )
    print(
        "\nPrefill bound: its FLOPs at the dense bf16 peak. Decode step: the slower of reading all weights plus the"
        "\nbatch's KV cache at the HBM peak and computing the batch's tokens at the FLOP peak. Requests/s bound: one"
        "\nrequest's prefill plus its share of the decode steps (prefill share: how much of that is prefill). The"
        "\npt-224 and pt-448 presets have the shapes of the mix presets of the same size and are left out."
        "\nParameters are counted from the architectures; presets.py has them from the model cards."
    )
    if args.no_cpu:
        return
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    rate = cpu_matmul_gflops() * cores
    print_table(
        f"The same FLOPs on this machine: {cores} cores x {rate / cores:.0f} GFLOP/s float32 matmul per core "
        f"(measured, CPU time; load average {load:.1f}); the H100's bf16 peak is {H100_BF16_FLOPS / 1e9 / rate:,.0f}x",
        ["preset", "prefill bound on this CPU (s)", "requests/hour bound on this CPU (prefill only)"],
        [
            [f"`{s.preset.name}`", f"{s.prefill_gflop / rate:,.1f}", f"{3600 * rate / s.prefill_gflop:,.1f}"]
            for s in sizings
        ],
    )


if __name__ == "__main__":
    main()
