"""transformers' PaliGemma on the same checkpoint, as the reference vLLM is compared with.

Two attention layouts:
- "prefix": PaliGemma's own layout, image and prompt attending both ways (`paligemma serve`'s default);
- "causal": every token attends to earlier ones only (`paligemma serve --attention causal`, plain vLLM).
Gemma 2's final logit softcap, which transformers' PaliGemma skips, is applied here as
vLLM (and the original model) do, so logprobs are comparable; see docs/attention.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

Attention = Literal["causal", "prefix"]


@dataclass(frozen=True)
class Step:
    token_id: int
    logprobs: torch.Tensor  # over the whole vocabulary


class TransformersReference:
    def __init__(self, checkpoint: Path) -> None:
        from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

        self.processor: Any = PaliGemmaProcessor.from_pretrained(checkpoint)
        # eager: transformers' SDPA path drops Gemma 2's attention-logit softcap.
        self.model: Any = PaliGemmaForConditionalGeneration.from_pretrained(
            checkpoint, attn_implementation="eager", dtype=torch.float32
        ).eval()
        self.softcap = float(self.model.config.text_config.final_logit_softcapping)

    def inputs(self, image: Image.Image, prompt: str) -> dict[str, torch.Tensor]:
        # "<image>" first, as the processor expects; it expands to one token per patch.
        return dict(self.processor(images=image, text="<image>" + prompt, return_tensors="pt"))

    def prompt_ids(self, image: Image.Image, prompt: str) -> list[int]:
        ids: list[int] = self.inputs(image, prompt)["input_ids"][0].tolist()
        return ids

    @torch.inference_mode()
    def greedy(self, image: Image.Image, prompt: str, steps: int, attention: Attention) -> list[Step]:
        """Greedy decoding without a cache (the tiny model makes that cheap and simple)."""
        inputs = self.inputs(image, prompt)
        ids = inputs["input_ids"]
        prefix_types = inputs["token_type_ids"]
        out: list[Step] = []
        for _ in range(steps):
            kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "pixel_values": inputs["pixel_values"]}
            if attention == "prefix":
                suffix = torch.ones((1, ids.shape[1] - prefix_types.shape[1]), dtype=prefix_types.dtype)
                kwargs["token_type_ids"] = torch.cat([prefix_types, suffix], dim=1)
            logits = self.model(**kwargs).logits[0, -1].float()
            logits = torch.tanh(logits / self.softcap) * self.softcap
            logprobs = torch.log_softmax(logits, dim=-1)
            token = int(torch.argmax(logprobs))
            out.append(Step(token, logprobs))
            if token == self.processor.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return out
