"""A deepened tiny model answers exactly as before, and its new layers are there to be trained."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from server.tiny_model import build_processor, build_tokenizer, paligemma_config
from training.depth import deepened
from training.resolution import architecture_of
from training.train_tiny import TRAINED_ARCHITECTURE

SMALL = replace(TRAINED_ARCHITECTURE, image_size_px=96, text_layers=3)


def _model(seed: int) -> object:
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(paligemma_config(build_tokenizer(), SMALL)).eval()
    with torch.no_grad():  # no weight left at its initial constant, as after training
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("added", [1, 2, 3])
def test_the_deeper_model_gives_the_same_logits(added: int) -> None:
    import torch

    tokenizer = build_tokenizer()
    shallow = _model(added)
    deep = deepened(shallow, tokenizer, added)
    assert architecture_of(deep) == replace(architecture_of(shallow), text_layers=3 + added)
    assert architecture_of(shallow) == SMALL
    processor = build_processor(tokenizer, SMALL)
    inputs = processor(
        text="<image>ocr", images=Image.new("RGB", (120, 80), (210, 40, 40)), suffix="ABC", return_tensors="pt"
    )
    with torch.no_grad():
        before, after = shallow(**inputs).logits, deep(**inputs).logits  # type: ignore[operator]
    assert float((before - after).abs().max()) < 1e-5


def test_the_new_layers_copy_the_last_ones_but_their_output_projections() -> None:
    import torch

    deep = deepened(_model(0), build_tokenizer(), 2)
    state = deep.state_dict()
    layer = "model.language_model.layers"
    for new, copied in ((3, 1), (4, 2)):
        assert float(state[f"{layer}.{new}.self_attn.o_proj.weight"].abs().max()) == 0.0
        assert float(state[f"{layer}.{new}.mlp.down_proj.weight"].abs().max()) == 0.0
        for kept in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "post_attention_layernorm.weight"):
            assert torch.equal(state[f"{layer}.{new}.{kept}"], state[f"{layer}.{copied}.{kept}"])
    # ... and training reaches them at once: the zero projections get gradients on the first step
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, SMALL)
    inputs = processor(
        text="<image>ocr", images=Image.new("RGB", (120, 80), "white"), suffix="ABC", return_tensors="pt"
    )
    deep.train()
    deep(**inputs).loss.backward()
    grad = deep.get_parameter(f"{layer}.4.self_attn.o_proj.weight").grad
    assert grad is not None and float(grad.abs().max()) > 0


@pytest.mark.parametrize(
    ("added", "message"), [(0, "deeper by one layer or more, not 0"), (4, "copies one of the last 3; 4 asked")]
)
def test_nothing_or_more_than_the_model_has_is_refused(added: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deepened(_model(0), build_tokenizer(), added)
