"""Build a tiny random-weight PaliGemma 2 checkpoint, offline and deterministically.

The checkpoint has the real architecture (Gemma 2 text model, SigLIP vision tower with
224 px / patch 14 = 256 image tokens, a linear projector) and a tokenizer with the real
special tokens, `<locNNNN>` and `<segNNN>`, but only ~0.26 M random parameters. Both
transformers and vLLM load it. Random weights answer nonsense: it exists to exercise the
serving and parsing code paths, never to judge quality. See docs/tiny-model.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import GemmaTokenizer


@dataclass(frozen=True)
class TinyArchitecture:
    """The sizes of a small PaliGemma 2 (Gemma 2 text model, SigLIP vision tower, linear projector)."""

    image_size_px: int = 224
    patch_size_px: int = 14
    text_hidden: int = 64
    text_intermediate: int = 128
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    head_dim: int = 32  # vLLM's CPU attention needs 32 or more
    vision_hidden: int = 64
    vision_intermediate: int = 128
    vision_layers: int = 1
    vision_heads: int = 2
    softcaps: bool = True  # Gemma 2's attention (50) and final (30) logit softcaps

    @property
    def image_tokens(self) -> int:
        return (self.image_size_px // self.patch_size_px) ** 2


RANDOM_ARCHITECTURE = TinyArchitecture()
IMAGE_TOKENS = RANDOM_ARCHITECTURE.image_tokens
README = """\
# Tiny random-weight PaliGemma 2 (paligemma-tools)

Built offline by `paligemma make-tiny-model` with seed {seed}. It has PaliGemma 2's
architecture and tokenizer layout but {parameters:,} random parameters: **its answers
are random nonsense**. Use it to exercise serving, prompting and parsing, never to judge
quality. For real answers serve `google/paligemma2-3b-mix-448` or another preset.
"""


def build_tokenizer() -> GemmaTokenizer:
    """A character-level Gemma tokenizer with PaliGemma's special and location tokens."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    vocab: dict[str, int] = {}
    for token in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"):
        vocab[token] = len(vocab)
    for byte in range(256):  # byte fallback: any text encodes
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token in ("\n", "▁", *map(chr, range(33, 127))):  # vLLM looks up "\n" itself
        vocab.setdefault(token, len(vocab))

    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=False, add_eos_token=False)
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", normalized=False, special=True)]})
    # Ordinary (non-special) tokens, as in the real tokenizer, so default decoding keeps them.
    locations = [f"<loc{i:04d}>" for i in range(1024)]
    segments = [f"<seg{i:03d}>" for i in range(128)]
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in locations + segments])
    return tokenizer


def _token_id(tokenizer: GemmaTokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise TypeError(f"{token} is not a single token")
    return token_id


def paligemma_config(tokenizer: GemmaTokenizer, arch: TinyArchitecture = RANDOM_ARCHITECTURE) -> Any:
    """A `PaliGemmaConfig` of PaliGemma 2's layout with the sizes of `arch`."""
    from transformers import PaliGemmaConfig

    vocab_size = len(tokenizer)  # exactly: padded ids crash vLLM's logprob detokenizer
    softcaps = {} if arch.softcaps else {"attn_logit_softcapping": None, "final_logit_softcapping": None}
    return PaliGemmaConfig(
        text_config={
            "model_type": "gemma2",
            "vocab_size": vocab_size,
            "hidden_size": arch.text_hidden,
            "intermediate_size": arch.text_intermediate,
            "num_hidden_layers": arch.text_layers,
            "num_attention_heads": arch.text_heads,
            "num_key_value_heads": arch.text_kv_heads,
            "head_dim": arch.head_dim,
            "query_pre_attn_scalar": arch.head_dim,
            "max_position_embeddings": 8192,
            "sliding_window": 4096,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "dtype": "float32",
            **softcaps,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": arch.vision_hidden,
            "intermediate_size": arch.vision_intermediate,
            "num_hidden_layers": arch.vision_layers,
            "num_attention_heads": arch.vision_heads,
            "image_size": arch.image_size_px,
            "patch_size": arch.patch_size_px,
            "vision_use_head": False,
        },
        image_token_index=_token_id(tokenizer, "<image>"),
        vocab_size=vocab_size,
        projection_dim=arch.text_hidden,
        hidden_size=arch.text_hidden,
        dtype="float32",
    )


def build_processor(tokenizer: GemmaTokenizer, arch: TinyArchitecture = RANDOM_ARCHITECTURE) -> Any:
    """The `PaliGemmaProcessor` for `arch`: square bicubic resize, pixels scaled to [-1, 1]."""
    from transformers import PaliGemmaProcessor, SiglipImageProcessor

    image_processor = SiglipImageProcessor(
        size={"height": arch.image_size_px, "width": arch.image_size_px},
        resample=3,  # bicubic, as the real checkpoints
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.image_seq_length = arch.image_tokens  # type: ignore[attr-defined]  # read by the processor
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # type: ignore[no-untyped-call]


def _use_real_checkpoint_layout(weights_path: Path) -> None:
    """Rename vision keys to `vision_tower.vision_model.*`, the layout of the real checkpoints."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights_path)
    renamed = {}
    for key, tensor in tensors.items():
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key.removeprefix("vision_tower.")
        renamed[key] = tensor.contiguous()
    save_file(renamed, weights_path, metadata={"format": "pt"})


def save_checkpoint(model: Any, processor: Any, directory: Path, readme: str) -> Path:
    """Write model, processor and README into `directory` in the layout of the real checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    _use_real_checkpoint_layout(directory / "model.safetensors")
    _keep_bos_setting(directory / "tokenizer_config.json")
    (directory / "README.md").write_text(readme)
    return directory


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """Write the tiny random-weight checkpoint into `directory` (created if needed) and return it."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer))
    parameters = sum(p.numel() for p in model.parameters())
    readme = README.format(seed=seed, parameters=parameters)
    return save_checkpoint(model, build_processor(tokenizer), directory, readme)


def _keep_bos_setting(path: Path) -> None:
    """PaliGemma 2's tokenizer adds no `<bos>` itself (the processor places it); vLLM reads this."""
    config = json.loads(path.read_text())
    config["add_bos_token"] = False
    config["add_eos_token"] = False
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def is_tiny_model(directory: Path) -> bool:
    """True if `directory` holds a tiny checkpoint of this project (random, or trained by `training/`)."""
    readme = directory / "README.md"
    return readme.is_file() and readme.read_text().startswith("# Tiny ")


def is_random_tiny_model(directory: Path) -> bool:
    """True if `directory` holds the random-weight checkpoint `build_tiny_model` writes."""
    readme = directory / "README.md"
    return readme.is_file() and readme.read_text().startswith("# Tiny random-weight PaliGemma 2")
