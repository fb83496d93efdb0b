"""Build a tiny random-weight PaliGemma 2 checkpoint, offline and deterministically.

The checkpoint has the real architecture (Gemma 2 text model, SigLIP vision tower with
224 px / patch 14 = 256 image tokens, a linear projector) and a tokenizer with the real
special tokens, `<locNNNN>` and `<segNNN>`, but only ~0.26 M random parameters. Both
transformers and vLLM load it. Random weights answer nonsense: it exists to exercise the
serving and parsing code paths, never to judge quality. See docs/tiny-model.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import GemmaTokenizer

IMAGE_SIZE_PX = 224
PATCH_SIZE_PX = 14
IMAGE_TOKENS = (IMAGE_SIZE_PX // PATCH_SIZE_PX) ** 2
TEXT_HIDDEN = 64
VISION_HIDDEN = 64
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


def _config(tokenizer: GemmaTokenizer) -> Any:
    from transformers import PaliGemmaConfig

    vocab_size = len(tokenizer)  # exactly: padded ids crash vLLM's logprob detokenizer
    return PaliGemmaConfig(
        text_config={
            "model_type": "gemma2",
            "vocab_size": vocab_size,
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,  # vLLM's CPU attention needs 32 or more
            "query_pre_attn_scalar": 32,
            "max_position_embeddings": 8192,
            "sliding_window": 4096,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "dtype": "float32",
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE_PX,
            "patch_size": PATCH_SIZE_PX,
            "vision_use_head": False,
        },
        image_token_index=_token_id(tokenizer, "<image>"),
        vocab_size=vocab_size,
        projection_dim=TEXT_HIDDEN,
        hidden_size=TEXT_HIDDEN,
        dtype="float32",
    )


def _processor(tokenizer: GemmaTokenizer) -> Any:
    from transformers import PaliGemmaProcessor, SiglipImageProcessor

    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE_PX, "width": IMAGE_SIZE_PX},
        resample=3,  # bicubic, as the real checkpoints
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.image_seq_length = IMAGE_TOKENS  # type: ignore[attr-defined]  # read by the processor
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


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """Write the tiny checkpoint into `directory` (created if needed) and return it."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    processor = _processor(tokenizer)
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(_config(tokenizer))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    _use_real_checkpoint_layout(directory / "model.safetensors")
    _keep_bos_setting(directory / "tokenizer_config.json")
    parameters = sum(p.numel() for p in model.parameters())
    (directory / "README.md").write_text(README.format(seed=seed, parameters=parameters))
    return directory


def _keep_bos_setting(path: Path) -> None:
    """PaliGemma 2's tokenizer adds no `<bos>` itself (the processor places it); vLLM reads this."""
    config = json.loads(path.read_text())
    config["add_bos_token"] = False
    config["add_eos_token"] = False
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def is_tiny_model(directory: Path) -> bool:
    """True if `directory` holds a checkpoint this module built."""
    readme = directory / "README.md"
    return readme.is_file() and readme.read_text().startswith("# Tiny random-weight PaliGemma 2")
