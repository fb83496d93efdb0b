"""The tiny checkpoint: deterministic, real tokenizer layout, loadable by transformers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from server.tiny_model import IMAGE_TOKENS, build_tiny_model, build_tokenizer, is_tiny_model


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_build_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert digest(build_tiny_model(tmp_path / "again")) == digest(tiny_model_dir)


def test_another_seed_gives_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    assert digest(other)["model.safetensors"] != digest(tiny_model_dir)["model.safetensors"]


def test_tokenizer_has_paligemma_tokens() -> None:
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    for token in ["<image>", "<bos>", "<eos>", "<pad>", "\n", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>"]:
        assert token in vocab, token
    assert "<image>" in tokenizer.all_special_tokens
    assert "<loc0042>" not in tokenizer.all_special_tokens  # ordinary tokens: decoding keeps them
    ids = tokenizer("<loc0001><loc0002><loc0003><loc0004> cat ; <seg005>").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<loc0001><loc0002><loc0003><loc0004> cat ; <seg005>"
    assert tokenizer.decode(tokenizer("détecte ünïcode").input_ids) == "détecte ünïcode"  # byte fallback


def test_transformers_loads_it_with_the_real_layout(tiny_model_dir: Path) -> None:
    from safetensors import safe_open
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as weights:
        vision_keys = [k for k in weights.keys() if k.startswith("vision_tower.")]
    assert vision_keys and all(k.startswith("vision_tower.vision_model.") for k in vision_keys)
    model = PaliGemmaForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = PaliGemmaProcessor.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(processor.tokenizer)
    assert processor.image_seq_length == IMAGE_TOKENS == 256
    assert processor.tokenizer.add_bos_token is False
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert is_tiny_model(tiny_model_dir)
    assert "random nonsense" in (tiny_model_dir / "README.md").read_text()


def test_a_folder_without_the_readme_is_not_called_tiny(tmp_path: Path) -> None:
    assert not is_tiny_model(tmp_path)
