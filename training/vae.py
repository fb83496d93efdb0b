"""A tiny VQ-VAE for the synthetic shapes' masks, with PaliGemma's decoder and `.npz` layout.

The decoder is big_vision's PaliGemma mask decoder layer for layer (a 1x1 conv, two
residual blocks, four stride-2 transposed convs, a 1x1 conv) with the array names of
`vae-oid.npz`, so `tools.vae_decoder.VaeDecoder` decodes it unchanged. The encoder is our
own small conv stack (`encoder.*` in the same file), used to turn 64x64 masks into the 16
`<segNNN>` training targets. `python -m training.vae OUT.npz` trains it in a few minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from tools.vae_decoder import CODEBOOK_SIZE, MASK_SIZE
from training.scenes import SHAPES, Shape, _draw_shape

if TYPE_CHECKING:
    import torch

EMBEDDING_DIM = 512
SUPERSAMPLE = 4
BOX_JITTER = 0.06  # how far a mask's shape may sit off its 64x64 canvas (fraction of a side)


def _modules() -> Any:
    """The torch module classes, built on first use (torch is imported only here)."""
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(),
                nn.Conv2d(dim, dim, 1),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = x + self.net(x)
            return out

    class Codebook(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._embedding = nn.Parameter(torch.randn(CODEBOOK_SIZE, EMBEDDING_DIM) * 0.1)

    class MaskVqVae(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 128, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(128, 128, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(128, EMBEDDING_DIM, 1),
            )  # fmt: skip
            self._vq_vae = Codebook()
            self.decoder = nn.Sequential(
                nn.Conv2d(EMBEDDING_DIM, 128, 1), nn.ReLU(), ResBlock(128), ResBlock(128),
                nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 1, 1),
            )  # fmt: skip

        def encode(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(N, 64, 64) masks in [-1, 1] -> (continuous (N, 16, 512), codes (N, 16))."""
            z = self.encoder(masks[:, None]).permute(0, 2, 3, 1).reshape(-1, 16, EMBEDDING_DIM)  # row-major codes
            distances = torch.cdist(z.reshape(-1, EMBEDDING_DIM), self._vq_vae._embedding)
            return z, distances.argmin(dim=1).reshape(-1, 16)

        def decode(self, quantized: torch.Tensor) -> torch.Tensor:
            """(N, 16, 512) code vectors -> (N, 64, 64) masks, nominally in [-1, 1]."""
            x = quantized.reshape(-1, 4, 4, EMBEDDING_DIM).permute(0, 3, 1, 2)
            out: torch.Tensor = self.decoder(x)[:, 0]
            return out

    return MaskVqVae


def training_masks(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 64, 64) float masks in [-1, 1] of the domain's shapes, slightly off-centre in their canvas."""
    big = MASK_SIZE * SUPERSAMPLE
    out = np.empty((count, MASK_SIZE, MASK_SIZE), dtype=np.float32)
    for i in range(count):
        shape: Shape = SHAPES[int(rng.integers(len(SHAPES)))]
        jitter = rng.uniform(-BOX_JITTER, BOX_JITTER, size=4) * big if rng.random() < 0.7 else np.zeros(4)
        box = (round(jitter[0]), round(jitter[1]), round(big + jitter[2]), round(big + jitter[3]))
        canvas = Image.new("L", (big, big), 0)
        _draw_shape(ImageDraw.Draw(canvas), shape, box, 255)
        small = canvas.resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BOX)
        out[i] = np.asarray(small, dtype=np.float32) / 255.0 * 2.0 - 1.0
    return out


def canonical_mask(shape: Shape) -> np.ndarray:
    """The 64x64 mask in [-1, 1] of `shape` filling its box exactly: what the model's codes stand for."""
    big = MASK_SIZE * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, big, big), 255)
    return np.asarray(canvas.resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BOX), dtype=np.float32) / 127.5 - 1.0


def train_vae(out: Path, *, seed: int = 0, steps: int = 800, batch: int = 32) -> dict[str, float]:
    """Train the VQ-VAE and write its arrays to `out` (npz, PyTorch layout); returns final metrics."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _modules()()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():  # start the codebook on encoder outputs, so codes are used from step one
        z, _ = model.encode(torch.from_numpy(training_masks(rng, 16)))
        flat = z.reshape(-1, EMBEDDING_DIM)
        model._vq_vae._embedding.copy_(flat[torch.randint(len(flat), (CODEBOOK_SIZE,))])
    pool = torch.from_numpy(training_masks(rng, 4096))
    started = time.monotonic()
    progress = tqdm(range(steps), desc="VQ-VAE", unit="step")
    for step in progress:
        target = pool[torch.from_numpy(rng.integers(len(pool), size=batch))]
        z, codes = model.encode(target)
        chosen = model._vq_vae._embedding[codes]
        quantized = z + (chosen - z).detach()  # straight-through estimator
        recon = model.decode(quantized)
        loss_recon = F.mse_loss(recon, target)
        loss_vq = F.mse_loss(chosen, z.detach()) + 0.25 * F.mse_loss(z, chosen.detach())
        loss = loss_recon + loss_vq
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        if step % 20 == 0:
            progress.set_postfix(recon=f"{loss_recon.item():.4f}", vq=f"{loss_vq.item():.4f}")
    metrics = evaluate(model, np.random.default_rng(seed + 1))
    metrics["seconds"] = time.monotonic() - started
    save_npz(model, out)
    return metrics


def evaluate(model: Any, rng: np.random.Generator, count: int = 256) -> dict[str, float]:
    """Mean IoU (> 0 thresholds) of masks passed through encode -> codes -> decode."""
    import torch

    target = training_masks(rng, count)
    with torch.no_grad():
        _, codes = model.encode(torch.from_numpy(target))
        decoded = model.decode(model._vq_vae._embedding[codes]).numpy()
    a, b = decoded > 0, target > 0
    iou = (a & b).sum(axis=(1, 2)) / np.maximum((a | b).sum(axis=(1, 2)), 1)
    return {"mask_iou": float(iou.mean()), "codes_used": float(len(np.unique(codes.numpy())))}


def save_npz(model: Any, out: Path) -> None:
    arrays = {name: value.detach().numpy().astype(np.float32) for name, value in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)


def load_vae(path: Path) -> Any:
    """The torch VQ-VAE (encoder and decoder) from an npz written by `save_npz`."""
    import torch

    model = _modules()()
    with np.load(path) as arrays:
        model.load_state_dict({name: torch.from_numpy(arrays[name]) for name in arrays.files})
    model.eval()
    return model


def encode_masks(model: Any, masks64: np.ndarray) -> np.ndarray:
    """(N, 64, 64) masks in [-1, 1] -> (N, 16) int codes."""
    import torch

    with torch.no_grad():
        _, codes = model.encode(torch.from_numpy(np.asarray(masks64, dtype=np.float32)))
    result: np.ndarray = codes.numpy()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args(argv)
    metrics = train_vae(args.out, seed=args.seed, steps=args.steps)
    print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
