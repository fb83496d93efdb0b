"""Planting the name match makes the supervised head look at the shape the prompt names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.model_source import TINY_TRAINED_DIR
from server.tiny_model import build_tokenizer
from tools.vae_checkpoint import TINY_SHAPES_VAE_PATH
from training import name_match
from training.grounding import object_cells
from training.scenes import SHAPES
from training.train_tiny import TRAINED_ARCHITECTURE, Batcher, model_inputs, name_probe_items, shape_codes

LAYER, HEAD = 2, 0
GRID = TRAINED_ARCHITECTURE.image_size_px // TRAINED_ARCHITECTURE.patch_size_px


@pytest.fixture(scope="module")
def batcher() -> Batcher:
    return Batcher(build_tokenizer(), TRAINED_ARCHITECTURE, shape_codes(Path(TINY_SHAPES_VAE_PATH)))


def _load_with_the_head_scrambled() -> Any:
    """The shipped checkpoint with the supervised head's query projection redrawn at random: its
    binding stage taught that head to look at the shape named, which planting must do by itself."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(TINY_TRAINED_DIR, attn_implementation="eager")
    q_proj = model.model.language_model.layers[LAYER].self_attn.q_proj.weight
    rows = slice(HEAD * TRAINED_ARCHITECTURE.head_dim, (HEAD + 1) * TRAINED_ARCHITECTURE.head_dim)
    with torch.no_grad():
        drawn = torch.randn(q_proj[rows].shape, generator=torch.Generator().manual_seed(0))
        q_proj[rows] = drawn * float(q_proj[rows].std())
    return model


def _probe(batcher: Batcher, scenes_count: int) -> tuple[dict[str, Any], Any]:
    """train-tiny's name probe (`detect SHAPE` for each shape, on scenes of two or three kinds) and
    the cells of the shape named in each row."""
    import torch

    items = name_probe_items(np.random.default_rng(2), scenes_count)
    cells = [
        object_cells(item.scene, [i for i, o in enumerate(item.scene.objects) if o.shape == shape], GRID).any(axis=0)
        for item, shape in zip(items, SHAPES * scenes_count, strict=True)
    ]
    return batcher.collate(items), torch.from_numpy(np.array(cells, dtype=np.float32))


def _attention_on_shapes(model: Any, batch: dict[str, Any], named: Any) -> tuple[float, float]:
    """Median attention of the head, from `\\n` of `detect SHAPE`, on the named shape's cells and on
    the other shapes' cells."""
    import torch

    model.eval()
    with torch.no_grad():
        attentions = model(**model_inputs(batch), output_attentions=True).attentions
    tokens = TRAINED_ARCHITECTURE.image_tokens
    rows = torch.arange(batch["input_ids"].shape[0])
    last = batch["attention_mask"].sum(dim=1) - 2  # `\n`: the name probe's answers are empty
    weights = attentions[LAYER][rows, HEAD, last, :tokens]
    on_shape = ((batch["patch_kind"] >= 1) & (batch["patch_kind"] <= 3)).float()
    return float((weights * named).sum(-1).median()), float((weights * on_shape * (1 - named)).sum(-1).median())


def test_planting_turns_the_head_to_the_shape_named(batcher: Batcher) -> None:
    rng = np.random.default_rng(11)
    fit_on = batcher.collate([batcher.sample(rng, "detect_one", least_kinds=2) for _ in range(96)])
    probe, named = _probe(batcher, 12)
    model = _load_with_the_head_scrambled()
    named_before, others_before = _attention_on_shapes(model, probe, named)
    planted = name_match.plant(model, fit_on, TRAINED_ARCHITECTURE, LAYER, HEAD, score_gap=12.0)
    named_after, others_after = _attention_on_shapes(model, probe, named)

    assert planted.query_accuracy > 0.9 and planted.key_accuracy > 0.7
    # Among the shapes, the head now prefers the one named.
    share_before = named_before / (named_before + others_before)
    share_after = named_after / (named_after + others_after)
    assert share_after > 0.5 and share_after > share_before + 0.1
