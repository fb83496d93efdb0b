"""GPU memory to fine-tune each PaliGemma 2 preset with `paligemma finetune`, derived (not measured).

    .venv/bin/python -m benchmarks.finetune_memory [--batch-size 8] [--rank 8]

Derived from the parameter counts (server/presets.py) and the Gemma 2 sizes of the model cards,
for what training/finetune.py does on a GPU: every weight in bfloat16; LoRA on the text model's
seven projections (peft keeps the adapter, its gradients and AdamW's two moments in float32);
full fine-tuning keeps gradients and AdamW's moments in bfloat16 (the parameters' dtype).
Activations are a rough bound without recomputation: 34 bytes per token per hidden unit per
layer (Korthikanti et al. 2022, bf16, attention scores not stored as SDPA does), for the text
model over image + 64 text tokens and the vision tower over the image tokens.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from benchmarks.common import print_table
from server.presets import PRESETS

GIB = 2**30
TEXT_TOKENS = 64  # prompt and answer of a detection example, generously


@dataclass(frozen=True)
class Gemma2:
    """Text model sizes from the Gemma 2 model card (2B, 9B, 27B)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    def lora_parameters(self, rank: int) -> int:
        """r x (in + out) for q, k, v, o, gate, up and down in every layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = [(self.hidden, q), (self.hidden, kv), (self.hidden, kv), (q, self.hidden)]
        shapes += [(self.hidden, self.intermediate)] * 2 + [(self.intermediate, self.hidden)]
        return self.layers * sum(rank * (i + o) for i, o in shapes)


TEXT = {
    "3b": Gemma2(2304, 9216, 26, 8, 4, 256),
    "10b": Gemma2(3584, 14336, 42, 16, 8, 256),
    "28b": Gemma2(4608, 36864, 46, 32, 16, 128),
}
SIGLIP_HIDDEN, SIGLIP_LAYERS = 1152, 27  # So400m/14


def activations_gib(size: str, image_tokens: int, batch: int) -> float:
    text = TEXT[size]
    per_example = 34 * (
        (image_tokens + TEXT_TOKENS) * text.hidden * text.layers + image_tokens * SIGLIP_HIDDEN * SIGLIP_LAYERS
    )
    return batch * per_example / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=8, help="the larger batch of the table (the other is 1)")
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    batches = (1, args.batch_size)
    rows = []
    for preset in PRESETS.values():
        size = preset.name.split("-")[0]
        params = preset.parameters_b * 1e9
        lora = TEXT[size].lora_parameters(args.rank)
        weights = params * 2 / GIB
        lora_state = weights + lora * 16 / GIB  # adapter, its gradients, two AdamW moments: float32
        full_state = params * 8 / GIB  # weights, gradients, two AdamW moments: bfloat16
        acts = [activations_gib(size, preset.image_tokens, b) for b in batches]
        rows.append([
            f"`{preset.name}`", f"{preset.parameters_b:.2f} B", f"{lora / 1e6:.1f} M", f"{weights:.1f}",
            f"{acts[0]:.1f}", *(f"{lora_state + a:.0f}" for a in acts), *(f"{full_state + a:.0f}" for a in acts),
        ])  # fmt: skip
    print_table(
        f"Derived GPU memory (GiB) to fine-tune, LoRA rank {args.rank} (derived from parameter counts, not measured)",
        [
            "preset", "parameters", "LoRA parameters", "bf16 weights", "activations per example (rough)",
            *(f"LoRA, batch {b}" for b in batches), *(f"full, batch {b}" for b in batches),
        ],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
