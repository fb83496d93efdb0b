"""Plant the name-to-shape match in one attention head before the binding stage trains it.

The tiny model locates shapes but ignores the name asked for (docs/tiny-model.md): the match
between a query that carries the name and keys that carry each patch's kind never formed in
training, because both factors start near zero and each gets gradient only through the other.
Both halves are there to read, though: a linear probe reads the named kind (and colour) from
the text model's input to the head at the answer positions, and the kind (and colour) of each
patch from the same input at the image tokens. This module fits those two probes by least
squares on a batch of examples and writes them into the head's query and key projections, in
a few dimensions whose rotary angle hardly turns over the prompt's length, so that the head
starts out attending to the patches of the shape named. Training then carries on from a
working circuit instead of a saddle. Only weights change; the architecture stays PaliGemma's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.patch_targets import IGNORE
from training.prefix_lm import model_inputs
from training.scenes import COLORS, SHAPES

if TYPE_CHECKING:
    import torch

    from server.tiny_model import TinyArchitecture

FEATURES = len(SHAPES) + len(COLORS)  # one query/key dimension per shape, then per colour


@dataclass(frozen=True)
class PlantedMatch:
    """What was planted: the probes' held-out accuracies and the head dimensions written."""

    query_accuracy: float  # named kind read at the prompt's last position, on held-out rows
    key_accuracy: float  # kind of the shape patches read from the image tokens, held out
    dims: tuple[int, ...]  # the head dimensions now carrying the match


def _slowest_dims(head_dim: int) -> tuple[int, ...]:
    """The first-half dimensions of the rotary pairs that turn slowest (the last FEATURES of them)."""
    half = head_dim // 2
    return tuple(range(half - FEATURES, half))


def _one_hot(indices: np.ndarray, classes: int, offset: int) -> np.ndarray:
    """Rows of one-hot codes for `indices - offset` in [0, classes); zero rows elsewhere."""
    out = np.zeros((len(indices), classes), dtype=np.float64)
    inside = (indices >= offset) & (indices < offset + classes)
    out[np.nonzero(inside)[0], indices[inside] - offset] = 1.0
    return out


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float = 1e-2) -> np.ndarray:
    """(features, targets) least-squares weights with a small ridge penalty."""
    gram = x.T @ x + penalty * len(x) * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y)


def _accuracy(x: np.ndarray, weights: np.ndarray, kinds: np.ndarray) -> float:
    """Share of rows whose largest shape score is their kind (`kinds` 0-based shape indices)."""
    return float(((x @ weights)[:, : len(SHAPES)].argmax(axis=1) == kinds).mean())


def plant(
    model: Any,
    batch: dict[str, torch.Tensor],
    arch: TinyArchitecture,
    layer: int,
    head: int,
    score_gap: float = 6.0,
) -> PlantedMatch:
    """Fit the probes on `batch` (a collated batch with grounding targets, two-way prefix) and write
    them into `head` of text layer `layer`, so that a patch of the named kind scores `score_gap`
    more than another (colour adds half as much)."""
    import torch

    attention = model.model.language_model.layers[layer]
    seen: list[torch.Tensor] = []
    hook = attention.input_layernorm.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    model.eval()
    with torch.no_grad():
        model(**model_inputs(batch))
    model.train()
    hook.remove()
    hidden = seen[0].double().numpy()  # (rows, length, hidden): what q_proj and k_proj read
    tokens = arch.image_tokens

    # keys: every shape patch by its kind and colour; background and word patches score nothing
    patch_kind = batch["patch_kind"].numpy().reshape(-1)
    patch_color = batch["patch_color"].numpy().reshape(-1)
    on_shape = (patch_kind >= 1) & (patch_kind <= len(SHAPES))
    key_x = hidden[:, :tokens].reshape(-1, hidden.shape[-1])
    key_y = np.concatenate(
        [_one_hot(patch_kind, len(SHAPES), 1), _one_hot(np.where(on_shape, patch_color, 0), len(COLORS), 1)], axis=1
    )
    # queries: the last prompt position (`\n`, which predicts the first answer token), where the
    # answer is about a shape the prompt names; later answer positions read the name poorly
    named_kind = batch["ground_kind"].numpy()
    named_color = batch["ground_color"].numpy()
    prefix = ((batch["token_type_ids"] == 0) & (batch["attention_mask"] == 1)).sum(dim=1).numpy()
    first = np.zeros_like(named_kind, dtype=bool)
    first[np.arange(len(prefix)), prefix - 1] = True
    asked = (named_kind != IGNORE) & first
    query_x = hidden[asked]
    asked_color = np.where(named_color[asked] == IGNORE, 0, named_color[asked])
    query_y = np.concatenate(
        [_one_hot(named_kind[asked], len(SHAPES), 1), _one_hot(asked_color, len(COLORS), 1)], axis=1
    )
    rows = batch["input_ids"].shape[0]
    train_rows = np.arange(rows) < rows * 3 // 4  # the last quarter of the rows is held out
    key_rows = np.repeat(train_rows, tokens)
    query_rows = np.broadcast_to(train_rows[:, None], asked.shape)[asked]
    key_w = _ridge(key_x[key_rows], key_y[key_rows])
    query_w = _ridge(query_x[query_rows], query_y[query_rows])
    key_acc = _accuracy(key_x[~key_rows & on_shape], key_w, patch_kind[~key_rows & on_shape] - 1)
    query_acc = _accuracy(query_x[~query_rows], query_w, named_kind[asked][~query_rows] - 1)

    # a match scores score_gap (shapes) or half of it (colours) after the attention's scaling
    weight = np.concatenate([np.full(len(SHAPES), score_gap), np.full(len(COLORS), score_gap / 2)])
    scale = np.sqrt(weight / attention.self_attn.scaling)
    dims = _slowest_dims(arch.head_dim)
    half = arch.head_dim // 2
    group = head // (arch.text_heads // arch.text_kv_heads)
    with torch.no_grad():
        q = attention.self_attn.q_proj.weight
        k = attention.self_attn.k_proj.weight
        for other in range(arch.text_heads):  # the other heads sharing these keys ignore these dims
            if other // (arch.text_heads // arch.text_kv_heads) == group:
                for d in dims:
                    q[other * arch.head_dim + d] = 0.0
                    q[other * arch.head_dim + d + half] = 0.0
        for feature, d in enumerate(dims):
            q[head * arch.head_dim + d] = torch.from_numpy(query_w[:, feature] * scale[feature]).float()
            k[group * arch.head_dim + d] = torch.from_numpy(key_w[:, feature] * scale[feature]).float()
            k[group * arch.head_dim + d + half] = 0.0
    return PlantedMatch(query_acc, key_acc, dims)
