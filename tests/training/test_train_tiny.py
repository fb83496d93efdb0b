"""The training batches are PaliGemma's own, and a few steps write a checkpoint both loaders read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.tiny_model import build_processor, build_tokenizer
from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH
from training import tasks
from training.scenes import make_scene
from training.train_tiny import (
    TRAINED_ARCHITECTURE,
    Batcher,
    Item,
    TrainSettings,
    model_pixels,
    read_words,
    train,
)

CODES = {"circle": tuple(range(16)), "square": tuple(range(16, 32)), "triangle": tuple(range(32, 48))}


@pytest.fixture(scope="module")
def batcher() -> Batcher:
    return Batcher(build_tokenizer(), TRAINED_ARCHITECTURE, CODES)


@pytest.mark.parametrize("seed", range(6))
def test_batches_equal_what_paligemma_processor_builds(batcher: Batcher, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, max_side=400)
    example = tasks.example_for(rng, scene, CODES.__getitem__)
    processor = build_processor(batcher.tokenizer, TRAINED_ARCHITECTURE)
    expected = processor(
        text="<image>" + example.prompt, images=scene.image, suffix=example.answer, return_tensors="np"
    )
    batch = batcher.collate([Item(example, scene.image, scene)])
    assert batch["input_ids"][0].tolist() == expected["input_ids"][0].tolist()
    assert batch["token_type_ids"][0].tolist() == expected["token_type_ids"][0].tolist()
    labels = expected["labels"][0] if "labels" in expected else None
    if labels is not None:
        assert batch["labels"][0].tolist() == labels.tolist()
    np.testing.assert_allclose(batch["pixel_values"][0].numpy(), expected["pixel_values"][0], atol=2 / 127.5)


def test_causal_rows_have_no_two_way_prefix(batcher: Batcher) -> None:
    scene = make_scene(np.random.default_rng(0), kind="word", max_side=200)
    example = tasks.Example("ocr", "ocr", "CAT")
    item = Item(example, scene.image, scene)
    batch = batcher.collate([item, item], causal=[False, True])
    assert batch["token_type_ids"][0].sum() == 4  # "CAT" + <eos>
    assert batch["token_type_ids"][1].sum() == batch["attention_mask"][1].sum()


def test_model_pixels_scale_to_minus_one_one() -> None:
    pixels = model_pixels(Image.new("RGB", (300, 100), (255, 0, 128)), 160)
    assert pixels.shape == (3, 160, 160)
    np.testing.assert_allclose(pixels[:, 0, 0], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)


def test_a_few_steps_write_a_checkpoint_transformers_loads(tmp_path: Path) -> None:
    from transformers import PaliGemmaForConditionalGeneration

    settings = TrainSettings(
        steps=3, batch=4, warmup=1, save_every=3, binding_steps=0, first_letter_steps=0, letter_steps=0,
        reading_steps=0, speaking_steps=0, deepened_steps=0,
    )  # fmt: skip
    out = train(tmp_path / "tiny", TINY_SHAPES_VAE_PATH, settings)
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps_done"] == 3 and len(log["losses"]) == 3 and all(np.isfinite(log["losses"]))
    assert [step for step, _ in log["location_error_bins"]] == [0, 2]
    assert (out / "loss_curve.png").stat().st_size > 0
    model = PaliGemmaForConditionalGeneration.from_pretrained(out)
    assert model.config.vision_config.image_size == settings.first_image_size_px  # no reading passes: not raised
    assert (out / "README.md").read_text().startswith("# Tiny trained PaliGemma 2")


def test_the_binding_and_reading_stages_continue_the_main_stage_and_its_log(tmp_path: Path) -> None:
    settings = TrainSettings(
        steps=2, batch=4, warmup=1, save_every=2, probe_every=1, probe_scenes=6, binding_steps=2, last_binding_steps=1,
        first_letter_steps=0, letter_steps=2, letter_batch=3, reading_steps=1, settling_steps=1, settling_rounds=2,
        rereading_passes=1, raised_passes=1, speaking_rounds=1, speaking_steps=2, deepened_text_layers=1,
        deepened_steps=1, common_word_steps=1, common_word_settling_steps=1, cooling_steps=1,
    )  # fmt: skip
    out = train(tmp_path / "tiny", TINY_SHAPES_VAE_PATH, settings)
    log = json.loads((out / "train_log.json").read_text())
    # main 2, binding 2 + 1, reading 1, settling 2 x 1, reading again 1, settling 1, raised to 224 px:
    # reading 1, settling 1, then the last settling 1; raised to 288 px: reading 1, settling 1, then
    # the final settling 1; speaking 2 and its settling 1; one text layer more: reading 1, speaking
    # 1, settling 1; the common words' reading 1, two settling stages of 1 and the cooling stage 1
    assert log["steps_done"] == 26 and len(log["losses"]) == 26 and len(log["grounding_losses"]) == 24
    assert [step for step, _ in log["name_dependence_nats"]] == list(range(26))
    assert all(np.isfinite(kl) and kl >= 0 for _, kl in log["name_dependence_nats"])
    assert len(log["letter_losses"]) == 2 and [step for step, _ in log["letter_accuracy"]] == [0, 1]
    assert all(0.0 <= accuracy <= 1.0 for _, accuracy in log["letter_accuracy"])
    assert len(log["aux_losses"]) == 23  # the main stage's two, then every later stage's letter loss
    # the run's settings, not the last stage's (`deepen` ran its speaking stage with 1 step)
    assert log["settings"] == json.loads(json.dumps(asdict(settings)))
    assert f"seed {settings.seed}, 26 steps" in (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 5
    config = json.loads((out / "config.json").read_text())["vision_config"]
    assert (config["image_size"], config["patch_size"]) == (288, 16) == (
        TRAINED_ARCHITECTURE.image_size_px, TRAINED_ARCHITECTURE.patch_size_px,
    )  # fmt: skip
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["image_processor"]["size"] == {"height": 288, "width": 288}


def test_a_letters_stage_first_trains_the_fresh_vision_tower_before_the_main_stage(tmp_path: Path) -> None:
    settings = TrainSettings(
        steps=2, batch=4, warmup=1, save_every=2, probe_every=1, probe_scenes=6, binding_steps=0, first_letter_steps=2,
        letter_batch=3, letter_steps=0, reading_steps=0, speaking_steps=0, deepened_steps=0,
    )  # fmt: skip
    out = train(tmp_path / "tiny", TINY_SHAPES_VAE_PATH, settings)
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["letter_losses"]) == 2 and [step for step, _ in log["letter_accuracy"]] == [0, 1]
    assert log["steps_done"] == 2 and len(log["losses"]) == 2 and len(log["aux_losses"]) == 2


def test_the_reading_stages_train_the_same_continued_as_in_one_run(tmp_path: Path) -> None:
    """`train-tiny --reading-stage-only` on a checkpoint gives what one `train-tiny` gives."""
    import torch
    from safetensors.torch import load_file

    before = TrainSettings(
        steps=2, batch=4, warmup=1, save_every=2, probe_every=1, probe_scenes=6, binding_steps=1, last_binding_steps=0,
        first_letter_steps=1, letter_batch=3, letter_steps=0, reading_steps=0, speaking_steps=0, deepened_steps=0,
    )  # fmt: skip
    # (the deepened stages are left to test_the_binding_and_reading_stages_continue_the_main_stage_and_its_log)
    reading = replace(
        before, letter_steps=2, reading_steps=1, settling_steps=1, settling_rounds=2, rereading_passes=1,
        raised_passes=1, speaking_rounds=1, speaking_steps=1, common_word_steps=1, common_word_settling_steps=1,
        cooling_steps=1,
    )  # fmt: skip
    one_run = train(tmp_path / "one", TINY_SHAPES_VAE_PATH, reading)
    continued = train(tmp_path / "two", TINY_SHAPES_VAE_PATH, before)
    torch.rand(1000)  # whatever the process did before does not matter
    read_words(continued, TINY_SHAPES_VAE_PATH, reading)
    one, two = load_file(one_run / "model.safetensors"), load_file(continued / "model.safetensors")
    assert one.keys() == two.keys()
    assert all(torch.equal(one[name], two[name]) for name in one)


def test_soft_targets_equal_cross_entropy_without_spread() -> None:
    import torch

    from training.train_tiny import loc_token_ids, soft_target_loss

    loc_ids = loc_token_ids(build_tokenizer())
    logits = torch.randn(2, 6, int(loc_ids[-1]) + 10, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 6), -100)
    labels[0, 2], labels[0, 3], labels[1, 5] = int(loc_ids[100]), 7, int(loc_ids[0])
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    )
    assert soft_target_loss(logits, labels, loc_ids, 0.0).item() == pytest.approx(reference.item(), rel=1e-5)
    # Spread over neighbours, a prediction one bin off costs less than one far off.
    near, far = torch.full_like(logits, -20.0), torch.full_like(logits, -20.0)
    near[0, 1, int(loc_ids[101])] = far[0, 1, int(loc_ids[400])] = 20.0
    only_loc = torch.full((2, 6), -100)
    only_loc[0, 2] = int(loc_ids[100])
    assert soft_target_loss(near, only_loc, loc_ids, 3.0) < soft_target_loss(far, only_loc, loc_ids, 3.0)


def test_loc_embeddings_start_ordinal() -> None:
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    from server.tiny_model import paligemma_config
    from training.train_tiny import init_loc_embeddings, loc_token_ids

    tokenizer = build_tokenizer()
    model = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, TRAINED_ARCHITECTURE))
    loc_ids = loc_token_ids(tokenizer)
    init_loc_embeddings(model, loc_ids, seed=0)
    emb = torch.nn.functional.normalize(model.get_input_embeddings().weight[loc_ids].detach(), dim=1)
    assert float(emb[500] @ emb[501]) > float(emb[500] @ emb[700]) + 0.3
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied


def test_vision_tokens_start_telling_patches_apart(batcher: Batcher) -> None:
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    from server.tiny_model import paligemma_config
    from training.train_tiny import init_vision_embeddings

    model = PaliGemmaForConditionalGeneration(paligemma_config(batcher.tokenizer, TRAINED_ARCHITECTURE))
    scene = make_scene(np.random.default_rng(3), kind="shapes", size=(400, 400))
    pixels = torch.from_numpy(model_pixels(scene.image, TRAINED_ARCHITECTURE.image_size_px))[None]

    def spread() -> float:
        with torch.no_grad():
            tokens = model.model.vision_tower(pixels).last_hidden_state[0]
        return float((tokens - tokens.mean(0)).norm(dim=1).mean() / tokens.norm(dim=1).mean())

    before = spread()
    init_vision_embeddings(model, TRAINED_ARCHITECTURE, batcher, np.random.default_rng(0))
    assert spread() > max(0.3, 3 * before)  # SigLIP's random start leaves every patch alike here


def test_the_batch_carries_per_patch_targets_for_the_auxiliary_heads(batcher: Batcher) -> None:
    import torch

    from training.aux_heads import AuxiliaryHeads
    from training.patch_targets import IGNORE

    rng = np.random.default_rng(1)
    batch = batcher.collate([batcher.sample(rng, "detect") for _ in range(4)])
    cells = (TRAINED_ARCHITECTURE.image_size_px // TRAINED_ARCHITECTURE.patch_size_px) ** 2
    assert batch["patch_kind"].shape == (4, cells) and batch["patch_box_bins"].shape == (4, cells, 4)
    assert bool((batch["patch_box_bins"] != IGNORE).any())
    heads = AuxiliaryHeads(16)
    features = torch.randn(4, cells, 16, requires_grad=True)
    loss = heads.loss(features, batch, torch.randn(1024, 16), sigma=3.0)
    loss.backward()  # type: ignore[no-untyped-call]
    assert bool(torch.isfinite(loss)) and features.grad is not None and float(features.grad.abs().sum()) > 0


def test_a_sampled_example_is_of_the_task_asked_for(batcher: Batcher) -> None:
    rng = np.random.default_rng(2)
    for task in {**tasks.TASK_WEIGHTS, **tasks.BINDING_WEIGHTS, **tasks.SPEAKING_WEIGHTS}:  # every stage's mix
        item = batcher.sample(rng, task)
        assert item.example.task == tasks.BUILT_AS.get(task, task)
        if task == "ocr":
            assert item.scene.word is not None and item.example.answer == item.scene.word.text


def test_loc_targets_narrow_to_hard_ones() -> None:
    from training.train_tiny import loc_sigma_at

    settings = TrainSettings(steps=1000, loc_sigma_bins=3.0, hard_loc_targets_from=0.5)
    widths = [loc_sigma_at(step, settings) for step in (0, 250, 499, 500, 999)]
    assert widths[0] == 3.0 and widths[1] == pytest.approx(1.5) and 0 < widths[2] < 0.01
    assert widths[3] == 0.0 and widths[4] == 0.0


@pytest.mark.parametrize("flag", ["--binding-stage-only", "--reading-stage-only"])
def test_continuing_without_a_checkpoint_says_what_is_missing(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from clients.cli import main

    out = tmp_path / "nothing-here"
    assert main(["train-tiny", "--out", str(out), "--vae-out", str(TINY_SHAPES_VAE_PATH), flag]) == 2
    message = capsys.readouterr().err
    assert flag in message and "train_log.json" in message and str(out) in message


def test_train_tiny_flags_set_the_settings_of_their_name(capsys: pytest.CaptureFixture[str]) -> None:
    from clients.cli import build_parser, train_settings

    args = build_parser().parse_args(
        ["train-tiny", "--seed", "4", "--steps", "0", "--settling-rounds", "0", "--rereading-passes", "3"]
    )
    assert train_settings(args) == replace(TrainSettings(), seed=4, steps=0, settling_rounds=0, rereading_passes=3)
    assert train_settings(build_parser().parse_args(["train-tiny"])) == TrainSettings()
    flags = build_parser().parse_args(["train-tiny"])
    stages = ("steps", "binding_steps", "last_binding_steps", "letter_steps", "first_letter_steps", "reading_steps")
    passes = (
        "settling_rounds", "rereading_passes", "raised_passes", "last_settling_rounds", "final_passes",
        "final_settling_rounds", "speaking_rounds", "speaking_steps", "deepened_text_layers", "deepened_steps",
        "common_word_steps", "common_word_settling_steps", "common_word_settling_rounds", "cooling_steps",
        "cooling_rounds",
    )  # fmt: skip
    for name in (*stages, *passes):
        assert hasattr(flags, name) and name in TrainSettings.__dataclass_fields__  # every stage flag is a setting
    for wrong in ("-1", "two", "1.5", "\u00b2", ""):  # the last but one: a digit int() does not read
        with pytest.raises(SystemExit) as refused:
            build_parser().parse_args(["train-tiny", "--rereading-passes", wrong])
        assert refused.value.code == 2 and f"expected a whole number >= 0, got {wrong!r}" in capsys.readouterr().err
