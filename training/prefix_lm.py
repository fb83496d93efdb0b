"""PaliGemma's prefix-LM batch layout, shared by `train-tiny` and `finetune`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORED_LABEL = -100


def pad_prefix_lm(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int, causal: Sequence[bool] | None = None
) -> dict[str, torch.Tensor]:
    """Padded `input_ids`, `attention_mask`, `token_type_ids` and `labels` for (prefix, answer) id rows.

    The prefix (image, `<bos>`, prompt, `\\n`) gets token type 0 (two-way), the answer 1 (causal)
    and the loss; rows marked `causal` get type 1 throughout.
    """
    import torch

    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    token_types = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORED_LABEL, dtype=torch.long)
    for i, (prefix, answer) in enumerate(rows):
        n = len(prefix) + len(answer)
        ids[i, :n] = torch.tensor(prefix + answer)
        attention[i, :n] = 1
        token_types[i, 0 if causal is not None and causal[i] else len(prefix) : n] = 1
        labels[i, len(prefix) : n] = torch.tensor(answer)
    return {"input_ids": ids, "attention_mask": attention, "token_type_ids": token_types, "labels": labels}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model's forward takes from a collated batch (which also carries labels and targets)."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
    return {k: batch[k] for k in keys}


# transformers' attention for reference answers under either mask (training.evaluate). Given
# `token_type_ids`, SDPA and eager apply the same two-way prefix (training batches always carry
# them). Given none, which is how a fully causal reference is asked for, eager is causal but SDPA
# (transformers 5.19) attends both ways over the whole prompt: the causal column of the accuracy
# tables was a second prefix column until this was found (tests/training/test_prefix_lm.py).
REFERENCE_ATTENTION = "eager"
