"""Raise a trained tiny PaliGemma 2 to a higher input resolution, as PaliGemma's own stage 2 does.

PaliGemma trains at 224 px first and then goes on at 448 and 896 px, the vision tower's
position embeddings resampled to the finer grid. `train-tiny` does the same from 160 to
224 px and then to 288 px (patch 16: 10x10, 14x14, 18x18 image tokens), where a word's letters
cover more patches (docs/tiny-model.md, "Reading at 224 px" and "Reading at 288 px"). Nothing
else changes shape: the patch size, the layers and the text model keep their weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.tiny_model import TinyArchitecture, paligemma_config

if TYPE_CHECKING:
    import torch


def architecture_of(model: Any) -> TinyArchitecture:
    """The sizes of `model` (a PaliGemma model), every one read from its config: a checkpoint a
    stage grew (deeper towers, a raised input, or wider layers of someone's own) keeps them."""
    vision, text = model.config.vision_config, model.config.text_config
    return TinyArchitecture(
        image_size_px=vision.image_size,
        patch_size_px=vision.patch_size,
        text_hidden=text.hidden_size,
        text_intermediate=text.intermediate_size,
        text_layers=text.num_hidden_layers,
        text_heads=text.num_attention_heads,
        text_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
        vision_layers=vision.num_hidden_layers,
        vision_heads=vision.num_attention_heads,
        softcaps=text.attn_logit_softcapping is not None,
    )


def resampled_position_embeddings(table: torch.Tensor, grid: int) -> torch.Tensor:
    """A (side*side, hidden) table of a square grid's position embeddings, bicubically resampled
    to (grid*grid, hidden), row-major as SigLIP numbers its patches."""
    import torch

    side = round(table.shape[0] ** 0.5)
    if side * side != table.shape[0]:
        raise ValueError(f"{table.shape[0]} position embeddings are not a square grid")
    if side == grid:
        return table.clone()
    square = table.reshape(side, side, -1).permute(2, 0, 1)[None]
    resampled = torch.nn.functional.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return resampled[0].permute(1, 2, 0).reshape(grid * grid, -1)


def raised(model: Any, tokenizer: Any, arch: TinyArchitecture) -> Any:
    """A new PaliGemma model of `arch` (its image size) holding `model`'s weights, the vision
    tower's position embeddings resampled to the new grid. `model` is left as it was."""
    from transformers import PaliGemmaForConditionalGeneration

    if model.config.vision_config.patch_size != arch.patch_size_px:
        raise ValueError("raising the resolution keeps the patch size; the checkpoint's differs")
    state = dict(model.state_dict())
    (name,) = [n for n in state if n.endswith("embeddings.position_embedding.weight")]
    state[name] = resampled_position_embeddings(state[name], arch.image_size_px // arch.patch_size_px)
    bigger = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, arch))
    bigger.load_state_dict(state)
    return bigger.eval()  # type: ignore[no-untyped-call]
