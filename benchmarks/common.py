"""Shared pieces of the benchmarks: inputs, the tiny model, the transformers reference loop."""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tools import data_uri


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB image with structure and noise (compresses like a photo, not a flat fill)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * y) % 256], axis=-1)
    noise = rng.normal(0, 12, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def image_data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return data_uri("image/png" if fmt == "PNG" else "image/jpeg", buffer.getvalue())


@contextmanager
def tiny_model() -> Iterator[Path]:
    """The tiny random-weight checkpoint, built into a temporary folder."""
    from server.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        yield build_tiny_model(Path(tmp) / "tiny-paligemma2")


@contextmanager
def checkpoint_for(model: str) -> Iterator[str]:
    """A local checkpoint folder: 'random' built now (removed after), anything else resolved by
    server.model_source ('tiny' is the trained checkpoint shipped in server/checkpoints)."""
    from server.model_source import resolve

    if model == "random":
        with tiny_model() as path:
            yield str(path)
    else:
        yield resolve(model).location


def use_own_vae(model: str) -> Path | None:
    """Masks of a `train-tiny` output folder decode with its own VQ-VAE (`vae.npz` in it) or,
    without one, the shipped tiny VQ-VAE (the one the tools pick for the name the benchmarks
    serve it under, `paligemma2-tiny-shapes`). Sets `$PALIGEMMA_VAE_PATH` and returns the path;
    None (nothing set) for the shipped tiny model or when the variable is set already."""
    from server.model_source import TINY_NAME, resolve
    from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH
    from tools.vae_checkpoint import ENV_VAR

    source = resolve(model)
    if source.location == resolve(TINY_NAME).location or ENV_VAR in os.environ:
        return None
    own = Path(source.location) / "vae.npz"
    chosen = own if own.is_file() else TINY_SHAPES_VAE_PATH
    os.environ[ENV_VAR] = str(chosen)
    print(f"masks decoded with {chosen} ({ENV_VAR} to choose another)")
    return chosen


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@dataclass
class TransformersLoop:
    """PaliGemma the way the PaliGemma 2 mix release notes run it: processor + generate, one image at a time."""

    model: Any
    processor: Any

    @classmethod
    def load(cls, checkpoint: Path) -> TransformersLoop:
        import torch
        from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

        model = PaliGemmaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()  # type: ignore[no-untyped-call]
        return cls(model, PaliGemmaProcessor.from_pretrained(checkpoint))

    def generate(self, image: Image.Image, prompt: str, new_tokens: int) -> str:
        import torch

        inputs = self.processor(images=image, text="<image>" + prompt, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        text: str = self.processor.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return text

    def generate_batch(self, images: Sequence[Image.Image], prompt: str, new_tokens: int) -> list[str]:
        """The same, for several images in one `generate` call (what a user who batches would run)."""
        import torch

        texts = ["<image>" + prompt] * len(images)
        inputs = self.processor(images=list(images), text=texts, return_tensors="pt", padding="longest")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        answers: list[str] = self.processor.batch_decode(new, skip_special_tokens=True)
        return answers


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
