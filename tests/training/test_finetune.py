"""`paligemma finetune` on the tiny trained model, on CPU: the prefix-LM batch, LoRA and full runs, resume."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from server import lora
from server.model_source import TINY_NAME, TINY_TRAINED_DIR, ModelSource, card_base_model, resolve
from training import finetune_data, model_card, star_scenes
from training.finetune import (
    Collator,
    FinetuneResult,
    FinetuneSettings,
    check_settings,
    checkpoint_folder,
    finetune,
    lr_at,
    serve_command,
)
from training.finetune_data import FinetuneError


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return star_scenes.write_coco(tmp_path_factory.mktemp("stars"), 6, seed=5, max_side=160)


def settings_for(coco: Path, out: Path, **changes: object) -> FinetuneSettings:
    base = FinetuneSettings(
        model=TINY_NAME,
        data=coco,
        images=coco.parent / "images",
        task="detect",
        out=out,
        max_steps=2,
        batch_size=2,
        eval_split=0.2,
        save_every=1,
        lr=1e-3,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_batch_is_what_paligemmas_processor_builds(coco: Path) -> None:
    from PIL import Image
    from transformers import PaliGemmaProcessor

    processor = PaliGemmaProcessor.from_pretrained(TINY_TRAINED_DIR)
    record = finetune_data.load_records(coco, coco.parent / "images", "detect")[0]
    batch = Collator(processor)([record])
    with Image.open(record.image) as image:
        reference = processor(
            text="<image>" + record.prefix, images=image.convert("RGB"), suffix=record.suffix, return_tensors="pt"
        )
    assert batch["input_ids"].tolist() == reference["input_ids"].tolist()
    assert batch["token_type_ids"].tolist() == reference["token_type_ids"].tolist()
    assert batch["labels"].tolist() == reference["labels"].tolist()  # the loss is on the answer and <eos> only
    assert batch["pixel_values"].allclose(reference["pixel_values"])


def test_the_learning_rate_warms_up_and_decays() -> None:
    settings = FinetuneSettings(model="m", data=Path("d"), images=Path("i"), task="detect", out=Path("o"), lr=1.0)
    rates = [lr_at(step, 100, settings) for step in range(100)]
    assert rates[0] < rates[4] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1, abs=0.01)


def test_lora_writes_a_servable_adapter_and_resumes(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "star"
    first = finetune(settings_for(coco, out))
    assert first.steps == 2 and first.eval_examples > 0 and first.score is not None
    adapter = lora.read_adapter("star", out)  # what `paligemma serve --lora star=OUT` reads
    assert adapter.rank == 8
    card = (out / "README.md").read_text()
    assert "\n# Fine-tuned PaliGemma" in card and f"--lora star={out}" in card and "AP50" in card
    assert card_base_model(out) == TINY_TRAINED_DIR.name  # vLLM lists the adapter's parent itself
    summary = json.loads((out / "eval.json").read_text())
    assert summary["metric"] == "AP50" and len(summary["losses"]) == 2

    with pytest.raises(FinetuneError, match="already holds a run"):
        finetune(settings_for(coco, out))
    resumed = finetune(settings_for(coco, out, max_steps=3, resume=True))
    assert resumed.steps == 3
    losses = json.loads((out / "eval.json").read_text())["losses"]
    assert len(losses) == 3 and losses[:2] == summary["losses"]
    # Refused before anything loads: other data or settings, or fewer steps than done.
    with pytest.raises(FinetuneError, match=r"other settings \(batch_size 2 -> 4; seed 0 -> 7\)"):
        finetune(settings_for(coco, out, max_steps=4, resume=True, batch_size=4, seed=7))
    with pytest.raises(FinetuneError, match="has done 3 steps, more than the 2 asked"):
        finetune(settings_for(coco, out, max_steps=2, resume=True))
    # A save killed between its two renames: the whole new state waits as checkpoint.partial.
    (out / "checkpoint").rename(out / "checkpoint.partial")
    assert checkpoint_folder(out) == out / "checkpoint.partial"
    with pytest.raises(FinetuneError, match="already holds a run"):
        finetune(settings_for(coco, out))
    again = finetune(settings_for(coco, out, max_steps=4, resume=True))
    assert again.steps == 4 and checkpoint_folder(out) == out / "checkpoint"
    assert not (out / "checkpoint.partial").exists() and not (out / "checkpoint.old").exists()
    assert json.loads((out / "eval.json").read_text())["losses"][:3] == losses


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"save_every": 0}, "--save-every must be at least 1", id="save-every-0"),
        pytest.param({"lora_rank": 0}, "--lora-rank must be 1 to 512", id="rank-0"),
        pytest.param({"lora_rank": 600}, "--lora-rank must be 1 to 512", id="rank-600"),
        pytest.param({"lr": -1.0}, "--lr must be a positive number", id="negative-lr"),
        pytest.param({"lr": float("nan")}, "--lr must be a positive number", id="nan-lr"),
        pytest.param({"max_steps": 0}, "--max-steps must be at least 1", id="no-steps"),
        pytest.param({"max_steps": None, "epochs": 0.0}, "--epochs must be positive", id="no-epochs"),
        pytest.param({"batch_size": 0}, "--batch-size must be at least 1", id="batch-0"),
    ],
)
def test_settings_that_cannot_run_are_refused_first(
    coco: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(FinetuneError, match=message):
        check_settings(settings_for(coco, tmp_path / "out", **changes))
    assert not (tmp_path / "out").exists()


def test_an_out_folder_holding_other_files_is_not_written_over(coco: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my notes")
    with pytest.raises(FinetuneError, match=r"is not empty \(README.md\)"):
        finetune(settings_for(coco, project))
    assert (project / "README.md").read_text() == "my notes"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FinetuneError, match="is a file"):
        finetune(settings_for(coco, tmp_path / "a-file"))


def test_the_serve_command_works_for_a_folder_named_with_spaces(coco: Path, tmp_path: Path) -> None:
    settings = settings_for(coco, tmp_path / "my star run")
    command = serve_command(settings)
    assert f"--lora 'my-star-run={tmp_path}/my star run'" in command
    name, folder = lora.parse_lora_option(shlex.split(command)[-1])
    assert (name, folder) == ("my-star-run", tmp_path / "my star run")
    full = serve_command(dataclasses.replace(settings, method="full"))
    assert shlex.split(full)[-1] == str(tmp_path / "my star run")


def test_resume_without_a_checkpoint_says_so(coco: Path, tmp_path: Path) -> None:
    with pytest.raises(FinetuneError, match="no checkpoint"):
        finetune(settings_for(coco, tmp_path / "new", resume=True))


def test_full_finetuning_writes_a_checkpoint_served_by_path(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = finetune(settings_for(coco, out, method="full", max_steps=1, eval_split=0.0, lr=1e-5))
    assert result.score is None
    source = resolve(str(out))  # what `paligemma serve --model OUT` reads
    assert source.is_local and source.max_model_len == resolve(TINY_NAME).max_model_len
    assert "\n# Fine-tuned PaliGemma" in (out / "README.md").read_text()
    # its card names the tiny model as its base: served, it is listed with it as parent, and the
    # tools send it what the tiny model sees (tests/training/test_finetune_served.py)
    assert source.parent == TINY_TRAINED_DIR.name and source.is_tiny
    # fine-tuned again, for segment: the tiny VQ-VAE writes its targets with no --vae (its card
    # says it is the tiny model's), and the new card names the first base
    again = tmp_path / "again"
    finetune(settings_for(coco, again, model=str(out), method="full", task="segment", max_steps=1, eval_split=0.0))
    assert card_base_model(again) == TINY_TRAINED_DIR.name


@pytest.mark.parametrize(
    ("method", "expected"),
    [("full", "google/paligemma2-3b-mix-448"), ("lora", "first")],
    ids=["a-checkpoint-names-the-first-base", "an-adapter-names-what-it-runs-on"],
)
def test_the_card_of_a_fine_tune_of_a_fine_tune(coco: Path, tmp_path: Path, method: str, expected: str) -> None:
    first = ModelSource("/m/first", "first", True, parent="google/paligemma2-3b-mix-448")
    result = FinetuneResult(tmp_path / "second", 1, 4, 0, "AP50", None, 0.1)
    settings = settings_for(coco, tmp_path / "second", model="/m/first", method=method)
    card = model_card.text(settings, first, result)
    (tmp_path / "README.md").write_text(card)
    assert card_base_model(tmp_path) == expected
    assert f"library_name: {'peft' if method == 'lora' else 'transformers'}" in card


def test_answers_longer_than_the_tools_budget_are_warned_of(coco: Path) -> None:
    from transformers import AutoTokenizer

    from tools.answer_text import detection_text
    from training.finetune import _answers_past_the_budget

    tokenizer = AutoTokenizer.from_pretrained(TINY_TRAINED_DIR)
    dense = detection_text([("dot", (i, i, i + 20, i + 20)) for i in range(0, 900, 25)])  # 36 boxes
    image = coco.parent / "images" / "x.png"
    records = [
        finetune_data.Record(image, 100, 100, "detect dot", dense),
        finetune_data.Record(image, 100, 100, "detect dot", detection_text([("dot", (1, 1, 50, 50))])),
    ]
    warning = _answers_past_the_budget(records, tokenizer)
    assert warning is not None and warning.startswith("warning: 1 of 2 answers are longer") and "against 256" in warning
    assert _answers_past_the_budget(records[1:], tokenizer) is None


@pytest.mark.parametrize(
    ("held", "score", "text"),
    [
        (0, None, "not measured (no held-out split)"),
        (8, None, "not measured (the held-out images hold nothing to find)"),
        (8, 0.5, "0.500"),
    ],
)
def test_the_score_says_why_it_was_not_measured(held: int, score: float | None, text: str) -> None:
    assert FinetuneResult(Path("o"), 1, 4, held, "AP50", score, 0.1).score_text == text
