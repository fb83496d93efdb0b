"""The tiny PaliGemma 2 trained on the synthetic shapes domain, as the tools recognise it.

`paligemma serve --model tiny` serves it as `paligemma2-tiny-shapes` (docs/tiny-model.md). Its
name says neither what it draws masks with nor what it sees, so the tools keep both here: its
own small VQ-VAE, shipped with the tools, and its 288 px input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["TINY_SHAPES_INPUT_PX", "TINY_SHAPES_MODEL", "TINY_SHAPES_VAE_PATH", "is_tiny_shapes_model"]

TINY_SHAPES_MODEL: Final = "paligemma2-tiny-shapes"
TINY_SHAPES_VAE_PATH: Final = Path(__file__).parent / "data" / "tiny-shapes-vae.npz"
# tests/server/test_trained_tiny.py checks this against the shipped checkpoint's config.
TINY_SHAPES_INPUT_PX: Final = 288


def is_tiny_shapes_model(model: str | None) -> bool:
    """Whether `model` (a served model name or a checkpoint path) is the tiny shapes model."""
    return model is not None and Path(model.rstrip("/")).name == TINY_SHAPES_MODEL
