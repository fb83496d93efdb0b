"""Images the tests send: small, deterministic, non-square."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import tools


def gradient_image(width: int = 300, height: int = 200, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with structure (not a flat colour), so vision features vary."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 32, size=pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(image: Image.Image) -> str:
    return tools.data_uri("image/png", png_bytes(image))
