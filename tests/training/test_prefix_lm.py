"""Which mask transformers' PaliGemma applies: the training batches' two-way prefix is honoured, and
the causal reference (no `token_type_ids`) is causal only with REFERENCE_ATTENTION."""

from __future__ import annotations

from typing import Any

from server.tiny_model import build_tokenizer, paligemma_config
from training.prefix_lm import REFERENCE_ATTENTION, pad_prefix_lm
from training.train_tiny import TRAINED_ARCHITECTURE


def _last_prefix_logits(attention: str, mode: str) -> Any:
    """Logits at the last prompt token: `mode` prefix or causal (as a training batch row) or none (no token types)."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, TRAINED_ARCHITECTURE)).eval()
    model.set_attn_implementation(attention)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    prompt = tokenizer("detect circle\n", add_special_tokens=False)["input_ids"]
    prefix = [image_id] * TRAINED_ARCHITECTURE.image_tokens + [tokenizer.bos_token_id, *prompt]
    batch = pad_prefix_lm([(prefix, [tokenizer.eos_token_id])], tokenizer.pad_token_id, [mode == "causal"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if mode != "none":
        inputs["token_type_ids"] = batch["token_type_ids"]
    generator = torch.Generator().manual_seed(1)
    size = TRAINED_ARCHITECTURE.image_size_px
    with torch.inference_mode():
        out = model(**inputs, pixel_values=torch.randn(1, 3, size, size, generator=generator))
    return out.logits[0, len(prefix) - 1]


def _gap(a: Any, b: Any) -> float:
    return float((a - b).abs().max())


def test_training_batches_get_the_two_way_prefix_or_the_causal_mask_with_sdpa() -> None:
    prefix, causal = _last_prefix_logits("sdpa", "prefix"), _last_prefix_logits("sdpa", "causal")
    assert _gap(prefix, causal) > 1e-3
    assert _gap(prefix, _last_prefix_logits("eager", "prefix")) < 1e-4
    assert _gap(causal, _last_prefix_logits("eager", "causal")) < 1e-4


def test_the_reference_attention_without_token_types_is_causal() -> None:
    assert _gap(_last_prefix_logits(REFERENCE_ATTENTION, "none"), _last_prefix_logits("eager", "causal")) < 1e-4


def test_sdpa_without_token_types_is_not_causal() -> None:
    """Why REFERENCE_ATTENTION is not SDPA. If this fails, transformers changed: reconsider the choice."""
    assert _gap(_last_prefix_logits("sdpa", "none"), _last_prefix_logits("eager", "causal")) > 1e-3
