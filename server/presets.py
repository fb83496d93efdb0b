"""The PaliGemma 2 checkpoints `paligemma serve` knows by name, and what each needs.

Memory figures are derived, not measured: bf16 weights (2 bytes a parameter) plus a
fixed share for activations, CUDA context and the KV cache of a few sequences at the
preset's context length. docs/deploy.md prints them with `paligemma presets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Parameter counts (billions) of Gemma 2 2B/9B/27B + SigLIP So400m, from the PaliGemma 2
# model cards; the presets' memory figures follow from them.
_PARAMETERS_B = {"3b": 3.03, "10b": 9.66, "28b": 27.65}
_IMAGE_TOKENS = {224: 256, 448: 1024, 896: 4096}
_ANSWER_AND_PROMPT_TOKENS = 768  # room for a long prompt and ~30 segmented objects
_HEADROOM = 1.25  # activations, CUDA context, KV cache for a handful of sequences
GPU_SIZES_GIB = (24, 40, 48, 80)  # L4/A10G, A100-40G, L40S/A6000, A100/H100-80G


def max_model_len(image_tokens: int) -> int:
    """The context vLLM needs: image tokens + prompt + answer, rounded up to a multiple of 256."""
    return math.ceil((image_tokens + _ANSWER_AND_PROMPT_TOKENS) / 256) * 256


@dataclass(frozen=True)
class Preset:
    """A named PaliGemma 2 checkpoint and the settings that fit it."""

    name: str
    hub_id: str
    image_size_px: int
    parameters_b: float

    @property
    def image_tokens(self) -> int:
        return _IMAGE_TOKENS[self.image_size_px]

    @property
    def max_model_len(self) -> int:
        return max_model_len(self.image_tokens)

    @property
    def weights_gib(self) -> float:
        return self.parameters_b * 1e9 * 2 / 2**30

    @property
    def gpu_memory_gib(self) -> float:
        """Total GPU memory it needs in bf16, across all GPUs of one replica."""
        return self.weights_gib * _HEADROOM + 2

    def tensor_parallel_for(self, gpu_gib: float) -> int:
        """Smallest power-of-two tensor-parallel size whose GPUs hold the model."""
        size = 1
        while self.gpu_memory_gib / size > gpu_gib * 0.9:  # vLLM's default utilisation
            size *= 2
        return size


def _presets() -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    for size, parameters in _PARAMETERS_B.items():
        for kind, resolutions in (("mix", (224, 448)), ("pt", (224, 448, 896))):
            for px in resolutions:
                name = f"{size}-{kind}-{px}"
                found[name] = Preset(name, f"google/paligemma2-{name}", px, parameters)
    return found


PRESETS: dict[str, Preset] = _presets()
DEFAULT_PRESET = "3b-mix-448"


def sizing_table() -> str:
    """The GPU sizing table of docs/deploy.md, as Markdown."""
    gpu_columns = " | ".join(f"TP on {gib} GiB" for gib in GPU_SIZES_GIB)
    lines = [
        f"| preset | hub id | image tokens | max-model-len | bf16 weights GiB | GPU memory GiB | {gpu_columns} |",
        "|---|---|---|---|---|---|" + "---|" * len(GPU_SIZES_GIB),
    ]
    for p in PRESETS.values():
        tp = " | ".join(str(p.tensor_parallel_for(gib)) for gib in GPU_SIZES_GIB)
        lines.append(
            f"| `{p.name}` | `{p.hub_id}` | {p.image_tokens} | {p.max_model_len} | "
            f"{p.weights_gib:.1f} | {p.gpu_memory_gib:.0f} | {tp} |"
        )
    return "\n".join(lines)
