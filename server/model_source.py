"""Resolve `--model` (a preset name, a hub id or a local path) and check it can be loaded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from server.errors import MissingPackageError, ModelSourceError
from server.presets import PRESETS, Preset, max_model_len
from server.tiny_model import is_tiny_model

TINY_NAME = "tiny"  # `--model tiny`: the tiny PaliGemma 2 trained on the synthetic domain, shipped here
TINY_TRAINED_DIR = Path(__file__).parent / "checkpoints" / "paligemma2-tiny-shapes"
HUB_MISSING = "huggingface_hub is missing: install the serving extra, `pip install 'paligemma-tools[cpu]'` or `[gpu]`."


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from and what is known of them before loading."""

    location: str  # what vLLM gets as --model: a hub id or an absolute path
    served_name: str
    is_local: bool
    preset: Preset | None = None
    max_model_len: int | None = None
    parameters_b: float | None = None
    is_tiny: bool = False
    parent: str | None = None  # the model it was fine-tuned from, by its served name (its card's base_model)
    # The sliding window when every text layer has one (a 1-layer Gemma 2; the real checkpoints
    # alternate full and windowed layers), else None: read from a local folder's config.
    every_layer_window: int | None = None

    @property
    def first_base(self) -> str:
        """The model this one was made from (its card's `base_model`), else this one: what it sees
        and which VQ-VAE its masks are written with follow it."""
        return self.parent or self.served_name


def _max_model_len_from_config(config: dict[str, object]) -> int | None:
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return None
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if not isinstance(size, int) or not isinstance(patch, int) or patch <= 0:
        return None
    return max_model_len((size // patch) ** 2)


def _every_layer_window(config: dict[str, object]) -> int | None:
    """The text model's sliding window if every layer attends through it (Gemma 2's layer types,
    given or by its default: even layers windowed, odd ones full), else None."""
    text = config.get("text_config")
    if not isinstance(text, dict) or not isinstance(window := text.get("sliding_window"), int):
        return None
    types = text.get("layer_types")
    if types is None and isinstance(layers := text.get("num_hidden_layers"), int):
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if isinstance(types, list) and types and all(kind == "sliding_attention" for kind in types):
        return window
    return None


def _local(path: Path) -> ModelSource:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(
            f"{path} has no config.json, so it is not a checkpoint folder. "
            "Pass a folder saved by transformers (config.json, *.safetensors, tokenizer), "
            "a preset name (see `paligemma presets`) or a hub id."
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"{config_path} cannot be read as JSON ({e}); the checkpoint is damaged.") from e
    if config.get("model_type") != "paligemma":
        raise ModelSourceError(
            f"{path} holds a {config.get('model_type')!r} model, not PaliGemma; serve a PaliGemma 2 checkpoint."
        )
    parent = card_base_model(path)
    return ModelSource(
        location=str(path.resolve()),
        served_name=path.resolve().name,
        is_local=True,
        max_model_len=_max_model_len_from_config(config),
        is_tiny=is_tiny_model(path) or parent == TINY_TRAINED_DIR.name,
        parent=parent,
        every_layer_window=_every_layer_window(config),
    )


def card_base_model(path: Path) -> str | None:
    """The `base_model` a checkpoint folder's model card (README.md) names in its metadata block, as
    Hugging Face model cards and `paligemma finetune`'s cards do; None without one. A card whose
    metadata cannot be read names nothing: the card is documentation, and vLLM serves without it."""
    card = path / "README.md"
    try:
        with card.open("rb") as f:
            opening = f.read(64)
    except OSError:
        return None
    if not opening.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"---"):
        return None  # no metadata block (the tiny checkpoints' own cards): nothing more to import or read
    try:
        import yaml
        from huggingface_hub.repocard import metadata_load
    except ImportError as e:
        raise MissingPackageError(HUB_MISSING) from e
    try:
        metadata = metadata_load(card)
    except (OSError, ValueError, RecursionError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return None
    base = (metadata or {}).get("base_model")
    if isinstance(base, list) and len(base) == 1:
        base = base[0]
    return base.strip() if isinstance(base, str) and base.strip() else None


def resolve(model: str) -> ModelSource:
    """Resolve a preset name, an existing local path, or a hub id (`owner/name`)."""
    if model == TINY_NAME:
        if not (TINY_TRAINED_DIR / "config.json").is_file():
            raise ModelSourceError(
                f"the trained tiny checkpoint is missing from {TINY_TRAINED_DIR} (a damaged install?). "
                "Reinstall paligemma-tools, or rebuild it with `paligemma train-tiny` (about 657 minutes on 2 cores)."
            )
        return _local(TINY_TRAINED_DIR)
    if model in PRESETS:
        preset = PRESETS[model]
        return ModelSource(preset.hub_id, preset.hub_id, False, preset, preset.max_model_len, preset.parameters_b)
    path = Path(model).expanduser()
    if path.exists():
        return _local(path)
    for preset in PRESETS.values():
        if preset.hub_id == model:
            return resolve(preset.name)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return ModelSource(model, model, False)
    known = ", ".join(PRESETS)
    raise ModelSourceError(
        f"{model!r} is neither {TINY_NAME!r}, a preset ({known}), an existing folder, nor a hub id (owner/name)."
    )


def check_available(source: ModelSource) -> None:
    """Fail early, with what to do, when a hub checkpoint is gated, absent, or unreachable."""
    if source.is_local:
        return
    try:
        import huggingface_hub
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError as e:
        raise MissingPackageError(HUB_MISSING) from e
    if isinstance(huggingface_hub.try_to_load_from_cache(source.location, "config.json"), str):
        return  # cached: vLLM loads it (and fetches missing weight files if it can)
    url = f"https://huggingface.co/{source.location}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelSourceError(
            f"{source.location} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"Download it on a connected machine (`hf download {source.location}`) and copy the cache, "
            "or pass a local checkpoint folder."
        )
    try:
        huggingface_hub.auth_check(source.location)
    except GatedRepoError as e:
        raise ModelSourceError(
            f"{source.location} is gated: accept its licence at {url} with your Hugging Face account, "
            "then log in (`hf auth login`) or set HF_TOKEN."
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelSourceError(
            f"{source.location} was not found on the hub (or it is private and no token was given). "
            f"Check the id at {url}, or pick a preset from `paligemma presets`."
        ) from e
    except Exception as e:  # connection refused, DNS failure, proxy error: all mean "unreachable"
        raise ModelSourceError(
            f"{source.location} is not in the local cache and the Hugging Face hub cannot be reached "
            f"({type(e).__name__}: {e}). Connect this machine, copy a downloaded cache, "
            "or pass a local checkpoint folder."
        ) from e
