"""Raising the tiny model's resolution keeps every weight but the position embeddings, which it resamples."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.tiny_model import RANDOM_ARCHITECTURE, TinyArchitecture, build_processor, build_tokenizer, paligemma_config
from training.resolution import architecture_of, raised, resampled_position_embeddings
from training.train_tiny import TRAINED_ARCHITECTURE, TrainLog, TrainSettings, _save, raise_resolution

SMALL = replace(TRAINED_ARCHITECTURE, image_size_px=96)  # a 6x6 grid, raised to 18x18


def test_the_same_grid_gives_the_same_table() -> None:
    import torch

    table = torch.randn(36, 8)
    assert torch.equal(resampled_position_embeddings(table, 6), table)


@pytest.mark.parametrize(
    ("rows", "cols", "grid"),
    [
        (1.0, 0.0, 14),  # an embedding that grows down the rows keeps growing down the rows
        (0.0, 1.0, 14),  # ... across the columns, across the columns (row-major, as SigLIP numbers patches)
        (1.0, -2.0, 9),
    ],
)
def test_resampling_keeps_which_way_positions_run(rows: float, cols: float, grid: int) -> None:
    import torch

    side = torch.arange(6, dtype=torch.float32)
    ramp = (rows * side[:, None] + cols * side[None, :]).reshape(36, 1)
    bigger = resampled_position_embeddings(ramp, grid).reshape(grid, grid).numpy()
    assert bigger.shape == (grid, grid)
    down, across = np.diff(bigger, axis=0), np.diff(bigger, axis=1)
    assert np.all(np.sign(down) == np.sign(rows)) if rows else np.allclose(down, 0, atol=1e-5)
    assert np.all(np.sign(across) == np.sign(cols)) if cols else np.allclose(across, 0, atol=1e-5)
    assert bigger.min() >= ramp.min() - 0.5 and bigger.max() <= ramp.max() + 0.5  # no wild overshoot at the edges


def test_a_table_that_is_not_a_square_grid_is_refused() -> None:
    import torch

    with pytest.raises(ValueError, match="35 position embeddings are not a square grid"):
        resampled_position_embeddings(torch.zeros(35, 4), 14)


def test_the_raised_model_keeps_every_other_weight_and_reads_the_bigger_image() -> None:
    import torch
    from PIL import Image
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    small = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, SMALL)).eval()
    big = raised(small, tokenizer, TRAINED_ARCHITECTURE)
    assert architecture_of(small) == SMALL
    assert architecture_of(big) == TRAINED_ARCHITECTURE
    before, after = small.state_dict(), big.state_dict()
    assert before.keys() == after.keys()
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert moved == ["model.vision_tower.embeddings.position_embedding.weight"]
    assert after[moved[0]].shape == (TRAINED_ARCHITECTURE.image_tokens, TRAINED_ARCHITECTURE.vision_hidden)
    processor = build_processor(tokenizer, TRAINED_ARCHITECTURE)
    inputs = processor(text="<image>detect circle", images=Image.new("RGB", (300, 200), "white"), return_tensors="pt")
    assert int((inputs["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 324
    with torch.no_grad():
        logits = big(**inputs).logits
    assert logits.shape[1] == inputs["input_ids"].shape[1] and bool(torch.isfinite(logits).all())


def test_another_patch_size_is_refused() -> None:
    from transformers import PaliGemmaForConditionalGeneration

    tokenizer = build_tokenizer()
    other = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, replace(SMALL, patch_size_px=12)))
    with pytest.raises(ValueError, match="keeps the patch size"):
        raised(other, tokenizer, TRAINED_ARCHITECTURE)


def test_a_deeper_checkpoint_is_raised_with_its_depth(tmp_path: Path) -> None:
    # raise_resolution took every size but the image's from the recipe's architecture, so a
    # checkpoint whose towers had grown (training.depth) could not be raised
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    deeper = replace(
        SMALL, text_layers=TRAINED_ARCHITECTURE.text_layers + 2, vision_layers=TRAINED_ARCHITECTURE.vision_layers + 1
    )
    model = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, deeper)).eval()
    assert architecture_of(model) == deeper
    _save(model, tokenizer, TrainSettings(), tmp_path, TrainLog(), 0)
    raise_resolution(tmp_path, TrainSettings(), 160)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 160
    assert config["text_config"]["num_hidden_layers"] == deeper.text_layers
    assert config["vision_config"]["num_hidden_layers"] == deeper.vision_layers


@pytest.mark.parametrize(
    "arch",
    [
        RANDOM_ARCHITECTURE,  # Gemma 2's softcaps on, patch 14
        replace(SMALL, text_heads=4, text_kv_heads=2, text_intermediate=1024),  # wider text layers
        replace(SMALL, vision_hidden=96, vision_intermediate=192, vision_heads=3, text_hidden=96),
    ],
)
def test_every_size_is_read_from_the_checkpoint(arch: TinyArchitecture) -> None:
    # the sizes no stage changes were once taken from the recipe, so a checkpoint of other
    # widths was described (and given auxiliary heads) as the recipe's
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration(paligemma_config(build_tokenizer(), arch))
    assert architecture_of(model) == arch
