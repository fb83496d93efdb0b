"""LoRA adapters for `paligemma serve --lora NAME=DIR`: read, check, and turned into vLLM's options.

vLLM serves every adapter as a model of its own name beside the base model (`/v1/models`
lists both); a request picks one by its `model` field, so the tools pick it by model name
(`PALIGEMMA_MODEL`, `PaliGemmaClient(model=...)`, `--model`). vLLM needs `--enable-lora`,
the adapters (`--lora-modules NAME=DIR ...`), the largest rank among them rounded up to a
rank it supports (`--max-lora-rank`) and how many may share a batch (`--max-loras`).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from server.errors import ServeError

# The ranks vLLM accepts for --max-lora-rank (vllm/config/lora.py, MaxLoRARanks).
VLLM_RANKS: Final = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# PaliGemma modules vLLM can put LoRA on without its experimental tower/connector LoRA.
TOWER_PARTS: Final = ("vision_tower", "multi_modal_projector")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AdapterError(ServeError):
    """A `--lora` adapter is missing, malformed, or cannot be served; the message says which and why."""


@dataclass(frozen=True)
class LoraAdapter:
    """One adapter to serve: the model name requests use, its folder and its rank."""

    name: str
    path: Path
    rank: int


def parse_lora_option(text: str) -> tuple[str, Path]:
    """`NAME=DIR` as given to `--lora`."""
    name, sep, folder = text.partition("=")
    if not sep or not folder:
        raise AdapterError(
            f"--lora takes NAME=DIR (the model name to serve it as, and the adapter's folder), got {text!r}."
        )
    if not _NAME.fullmatch(name):
        raise AdapterError(f"--lora name {name!r}: use letters, digits, '.', '_' or '-' (it becomes a model name).")
    return name, Path(folder).expanduser()


def read_adapter(name: str, folder: Path) -> LoraAdapter:
    """The adapter in `folder` (peft's adapter_config.json and weights), checked for vLLM."""
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterError(
            f"--lora {name}: {folder} has no adapter_config.json, so it is no LoRA adapter "
            "(`paligemma finetune --lora --out DIR` writes one; a full fine-tune is served with --model DIR)."
        )
    if not any((folder / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(f"--lora {name}: {folder} has no adapter_model.safetensors.")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"--lora {name}: {config_path} cannot be read as JSON ({e}).") from e
    if config.get("peft_type") != "LORA":
        raise AdapterError(
            f"--lora {name}: {folder} holds a {config.get('peft_type')!r} adapter; vLLM serves LoRA only."
        )
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and r > 0 for r in ranks):
        raise AdapterError(f"--lora {name}: {config_path} has no valid rank 'r'.")
    if config.get("use_dora"):
        raise AdapterError(f"--lora {name}: DoRA adapters are not served by vLLM; train a plain LoRA.")
    targets = config.get("target_modules") or []
    if any(part in str(targets) for part in TOWER_PARTS) and "language_model" not in str(targets):
        raise AdapterError(
            f"--lora {name}: the adapter changes the vision tower or projector, which vLLM serves only with its "
            "experimental --enable-tower-connector-lora; train the text model's projections (the default)."
        )
    return LoraAdapter(name, folder.resolve(), max(ranks))


def _adapter_width(folder: Path) -> int | None:
    """The width of the text model an adapter was made for: the inputs of its first q_proj lora_A,
    read from the safetensors header (no weights loaded); None when the file does not say."""
    try:
        with (folder / "adapter_model.safetensors").open("rb") as file:
            (size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(min(size, 64 * 1024 * 1024)))
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError):
        return None
    for key, tensor in header.items() if isinstance(header, dict) else ():
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        if "q_proj.lora_A" in key and isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
    return None


def _model_width(model_folder: Path) -> int | None:
    """The text model's hidden size from a checkpoint folder's config.json; None when it does not say."""
    try:
        config = json.loads((model_folder / "config.json").read_text())
        width = (config.get("text_config") or {}).get("hidden_size")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return width if isinstance(width, int) else None


def check_adapters_fit(adapters: tuple[LoraAdapter, ...], model_folder: Path, model: str) -> None:
    """Refuse an adapter made for a model of another width than the one served: vLLM would load
    everything and only then stop on a tensor size mismatch."""
    width = _model_width(model_folder)
    for adapter in adapters:
        made_for = _adapter_width(adapter.path)
        if width is not None and made_for is not None and made_for != width:
            raise AdapterError(
                f"--lora {adapter.name}: the adapter was made for a text model {made_for} wide, but --model {model} "
                f"is {width} wide. Serve it on the model it was fine-tuned from (its adapter_config.json names it "
                "as base_model_name_or_path)."
            )


def read_adapters(options: list[str] | tuple[str, ...]) -> tuple[LoraAdapter, ...]:
    """Every `--lora NAME=DIR`, read and checked, each name given once."""
    adapters = tuple(read_adapter(*parse_lora_option(text)) for text in options)
    names = [a.name for a in adapters]
    for name in names:
        if names.count(name) > 1:
            raise AdapterError(f"--lora name {name!r} is given twice; each adapter needs its own model name.")
    return adapters


def max_lora_rank(adapters: tuple[LoraAdapter, ...]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's."""
    largest = max(a.rank for a in adapters)
    for rank in VLLM_RANKS:
        if rank >= largest:
            return rank
    raise AdapterError(f"rank {largest} is larger than vLLM serves ({VLLM_RANKS[-1]}); train a smaller rank.")


def lora_args(adapters: tuple[LoraAdapter, ...], base_name: str) -> list[str]:
    """vLLM's options that serve `adapters` beside the base model served as `base_name` (none without adapters)."""
    if not adapters:
        return []
    for adapter in adapters:
        if adapter.name == base_name:
            raise AdapterError(f"--lora name {adapter.name!r} is the base model's served name; pick another.")
    return [
        "--enable-lora",
        "--lora-modules",
        *(f"{a.name}={a.path}" for a in adapters),
        "--max-lora-rank",
        str(max_lora_rank(adapters)),
        "--max-loras",
        str(len(adapters)),
    ]


def banner_lines(adapters: tuple[LoraAdapter, ...]) -> list[str]:
    """What `serve` prints about the adapters: their model names and how to pick one."""
    if not adapters:
        return []
    lines = ["LoRA adapters, each served as a model of its own name (PALIGEMMA_MODEL=NAME or --model NAME):"]
    lines += [f"  {a.name}  (rank {a.rank}, {a.path})" for a in adapters]
    return lines
