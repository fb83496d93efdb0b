"""The auxiliary heads that read per-patch targets from the image tokens, during training only.

A trained-from-scratch text model gets almost no signal about *where* things are from the
answer tokens alone (docs/tiny-model.md). These linear heads read each image token as the
text model receives it (the projector's output) and are scored against
`training.patch_targets`: what covers the patch, its colour, the letter under it, and the
covering shape's box, whose four bins are read through the `<loc>` embeddings themselves so
that an image token learns to carry its box in the very code the answer is written in. The
heads are not saved: the checkpoint keeps PaliGemma's architecture.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from training.patch_targets import IGNORE, KINDS
from training.scenes import COLORS


def soft_bin_nll(logits: torch.Tensor, target_bins: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-row cross-entropy of `logits` over bins against a Gaussian of `sigma` bins around each target."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    if sigma <= 0:
        return -log_probs.gather(1, target_bins[:, None])[:, 0]
    bins = torch.arange(logits.shape[-1], dtype=torch.float32)[None, :]
    weights = torch.exp(-0.5 * ((bins - target_bins.float()[:, None]) / sigma) ** 2)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return -(weights * log_probs).sum(dim=1)


class AuxiliaryHeads(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.kind = nn.Linear(hidden, len(KINDS))
        self.color = nn.Linear(hidden, 1 + len(COLORS))
        self.letter = nn.Linear(hidden, 26)
        self.box = nn.Linear(hidden, 4 * hidden)
        self.box_logit_scale = nn.Parameter(torch.tensor(8.0))  # sharp bins from the start

    def letter_loss(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The letter head's loss alone (0 in a batch without a word)."""
        flat = features.reshape(-1, features.shape[-1])
        letters = batch["patch_letter"].reshape(-1)
        if not bool((letters != IGNORE).any()):
            return flat.new_zeros(())
        return functional.cross_entropy(self.letter(flat), letters, ignore_index=IGNORE)

    def loss(
        self,
        features: torch.Tensor,
        batch: dict[str, torch.Tensor],
        loc_embeddings: torch.Tensor,
        sigma: float,
    ) -> torch.Tensor:
        """Mean of the four heads' losses; `features` (batch, tokens, hidden) from the projector."""
        flat = features.reshape(-1, features.shape[-1])
        kind = functional.cross_entropy(self.kind(flat), batch["patch_kind"].reshape(-1))
        color = functional.cross_entropy(self.color(flat), batch["patch_color"].reshape(-1))
        total = kind + color + self.letter_loss(features, batch)
        boxes = batch["patch_box_bins"].reshape(-1, 4)
        on_shape = boxes[:, 0] != IGNORE
        if bool(on_shape.any()):
            vectors = self.box(flat[on_shape]).reshape(-1, 4, features.shape[-1])
            logits = (vectors @ loc_embeddings.T) * self.box_logit_scale  # (cells, 4, 1024)
            total = (
                total + soft_bin_nll(logits.reshape(-1, logits.shape[-1]), boxes[on_shape].reshape(-1), sigma).mean()
            )
        return total / 4
