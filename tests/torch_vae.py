"""An independent PyTorch version of big_vision's VQ-VAE mask decoder, the reference the numpy
decoder is tested and timed against (torch is imported only here, never by the tools)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def torch_decoder(arrays: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """(N, 16) codes -> (N, 64, 64) masks, with PyTorch's own conv ops on the stored (PyTorch-layout) weights."""
    import torch
    import torch.nn.functional as F

    w = {name: torch.from_numpy(value) for name, value in arrays.items()}

    def decode(codes: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = w["_vq_vae._embedding"][torch.from_numpy(np.asarray(codes, dtype=np.int64))]  # (N, 16, 512)
            x = x.reshape(-1, 4, 4, 512).permute(0, 3, 1, 2)  # code i at row i // 4, column i % 4
            x = F.relu(F.conv2d(x, w["decoder.0.weight"], w["decoder.0.bias"]))
            for block in ("decoder.2.net", "decoder.3.net"):
                h = F.relu(F.conv2d(x, w[f"{block}.0.weight"], w[f"{block}.0.bias"], padding=1))
                h = F.relu(F.conv2d(h, w[f"{block}.2.weight"], w[f"{block}.2.bias"], padding=1))
                x = F.conv2d(h, w[f"{block}.4.weight"], w[f"{block}.4.bias"]) + x
            for index in (4, 6, 8, 10):
                x = F.conv_transpose2d(x, w[f"decoder.{index}.weight"], w[f"decoder.{index}.bias"], stride=2, padding=1)
                x = F.relu(x)
            result: np.ndarray = F.conv2d(x, w["decoder.12.weight"], w["decoder.12.bias"])[:, 0].numpy()
            return result

    return decode
