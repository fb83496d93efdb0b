"""Make a trained tiny PaliGemma 2's text model deeper without changing what it answers.

The new layers go after the last one, each a copy of one of the last layers whose two output
projections (attention `o_proj`, MLP `down_proj`) start at zero: a Gemma 2 layer adds its
attention's and its MLP's outputs to the residual stream, so a layer whose projections are zero
adds nothing, and the deeper model computes exactly what the shallower one did. Training then
grows them: the zero projections get gradients at once, the rest starts from the copied
weights, not from noise. `train-tiny` does this after its speaking rounds (docs/tiny-model.md,
"A deeper text model"), where the 4-layer text model held either the last of the reading or
the last of the boxes, not both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.tiny_model import paligemma_config
from training.resolution import architecture_of

ZEROED_PROJECTIONS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def deepened(model: Any, tokenizer: Any, added: int) -> Any:
    """A new PaliGemma model of `model`'s sizes with `added` text layers after `model`'s, which
    answers as `model` does (see the module's docstring); `model` is left as it was."""
    from transformers import PaliGemmaForConditionalGeneration

    if added < 1:
        raise ValueError(f"a model is made deeper by one layer or more, not {added}")
    arch = architecture_of(model)
    layers = arch.text_layers
    if added > layers:
        raise ValueError(f"each new layer copies one of the last {layers}; {added} asked for")
    state = dict(model.state_dict())
    (first,) = [name for name in state if name.endswith("language_model.layers.0.input_layernorm.weight")]
    prefix = first.removesuffix("0.input_layernorm.weight")
    for new in range(layers, layers + added):
        copied = f"{prefix}{new - added}."
        for name in [n for n in state if n.startswith(copied)]:
            weight = state[name].clone()
            if name.endswith(ZEROED_PROJECTIONS):
                weight.zero_()
            state[f"{prefix}{new}.{name.removeprefix(copied)}"] = weight
    deeper = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, replace(arch, text_layers=layers + added)))
    deeper.load_state_dict(state)
    return deeper.eval()  # type: ignore[no-untyped-call]
