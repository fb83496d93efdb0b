"""`paligemma finetune`: fine-tune PaliGemma on a user's own data with transformers (and peft for LoRA).

PaliGemma's prefix-LM objective: image and prompt attend both ways (`token_type_ids` 0), the
answer causally (1), and the loss is on the answer and `<eos>` only. bfloat16 on a GPU, float32
on a CPU. A progress bar shows the loss; every `save_every` steps the state (weights or adapter,
optimizer, step) goes to OUT/checkpoint so `resume` carries on where a run stopped. At the end
the held-out split is answered greedily and scored with the tools' parsers (training.finetune_eval),
and OUT holds the adapter (LoRA: `paligemma serve --lora NAME=OUT`) or the whole checkpoint
(full: `paligemma serve --model OUT`), a model card (README.md) and eval.json. docs/finetune.md.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from server.model_source import ModelSource, resolve
from tools.tiny_shapes_model import TINY_SHAPES_MODEL, TINY_SHAPES_VAE_PATH
from training import finetune_data, finetune_eval
from training.finetune_data import FinetuneError, MaskEncoder, Record, Task
from training.prefix_lm import pad_prefix_lm

if TYPE_CHECKING:
    import torch

Method = Literal["lora", "full"]
# The Gemma 2 text model's projections: what vLLM serves LoRA on for PaliGemma (the vision tower
# and projector need vLLM's experimental tower LoRA, so they stay frozen).
LORA_TARGETS: Final = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
CHECKPOINT_DIR: Final = "checkpoint"
DEFAULT_LR: Final[dict[Method, float]] = {"lora": 2e-4, "full": 1e-5}


@dataclass(frozen=True)
class FinetuneSettings:
    """What `paligemma finetune` was asked (None: derived from the data and the method)."""

    model: str
    data: Path
    images: Path
    task: Task
    out: Path
    method: Method = "lora"
    max_steps: int | None = None
    epochs: float = 1.0
    lr: float | None = None
    batch_size: int = 8
    eval_split: float = 0.1
    resume: bool = False
    lora_rank: int = 8
    lora_alpha: int | None = None  # default: twice the rank
    warmup_share: float = 0.05
    save_every: int = 100
    seed: int = 0
    vae: Path | None = None
    lang: str = "en"
    device: str | None = None  # default: cuda when available

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    steps: int
    train_examples: int
    eval_examples: int
    metric: str
    score: float | None
    minutes: float

    @property
    def score_text(self) -> str:
        if self.score is not None:
            return f"{self.score:.3f}"
        why = "the held-out images hold nothing to find" if self.eval_examples else "no held-out split"
        return f"not measured ({why})"


def adapter_name(out: Path) -> str:
    """The model name an adapter in `out` is served as: its folder's name, in the letters vLLM takes."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name).strip("-._")[:64]
    return name or "adapter"


def serve_command(settings: FinetuneSettings) -> str:
    """The command that serves what `settings` write, quoted for a shell."""
    if settings.method == "lora":
        lora = shlex.quote(f"{adapter_name(settings.out)}={settings.out}")
        return f"paligemma serve --model {shlex.quote(settings.model)} --lora {lora}"
    return f"paligemma serve --model {shlex.quote(str(settings.out))}"


def vae_path(settings: FinetuneSettings, source: ModelSource) -> Path | None:
    """`--vae`, else the shipped tiny VQ-VAE for the tiny model and for what was fine-tuned from it
    (its card says); None for the real checkpoints, whose vae-oid encoder is not here."""
    return settings.vae or (TINY_SHAPES_VAE_PATH if source.first_base == TINY_SHAPES_MODEL else None)


def mask_encoder(settings: FinetuneSettings, source: ModelSource) -> MaskEncoder | None:
    """The VQ-VAE encoder segment targets need: `--vae`, or the tiny VAE for the tiny model."""
    if settings.task != "segment":
        return None
    from training import vae

    path = vae_path(settings, source)
    if path is None:
        raise FinetuneError(
            "segment targets are written as 16 <seg> codes of PaliGemma's VQ-VAE, so they need that VQ-VAE's "
            "encoder. The real checkpoints use big_vision's vae-oid (its decoder is in the tools; its encoder "
            "is not implemented here), so fine-tuning a real checkpoint for segment needs big_vision's encoder "
            "to write the codes: write them into JSON Lines (--data FILE.jsonl with <seg> suffixes) and train "
            "on those. --vae takes an .npz of training/vae.py's layout, which only the tiny model uses."
        )
    if not path.is_file():
        raise FinetuneError(f"the VQ-VAE {path} does not exist.")
    try:
        model = vae.load_vae(path)
    except (KeyError, RuntimeError, ValueError) as e:
        raise FinetuneError(f"{path} is not a VQ-VAE of training/vae.py's layout (encoder.* arrays): {e}") from e
    return lambda masks: vae.encode_masks(model, masks)


class Collator:
    """Token ids, masks, token types and pixels for the prefix-LM loss: `<image>`xN `<bos>` prefix `\\n`
    answer `<eos>`, the ids PaliGemmaProcessor and vLLM build for the prompt."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        tokenizer = processor.tokenizer
        self.tokenizer = tokenizer
        self.image_tokens = int(processor.image_seq_length)
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def ids(self, record: Record) -> tuple[list[int], list[int]]:
        prefix: list[int] = self.tokenizer(record.prefix + "\n", add_special_tokens=False)["input_ids"]
        answer: list[int] = (
            self.tokenizer(record.suffix, add_special_tokens=False)["input_ids"] if record.suffix else []
        )
        return [self.image_id] * self.image_tokens + [self.bos_id, *prefix], [*answer, self.eos_id]

    def __call__(self, records: Sequence[Record]) -> dict[str, torch.Tensor]:
        batch = pad_prefix_lm([self.ids(r) for r in records], self.pad_id)
        images = [finetune_data.load_upright(r.image, str(r.image)) for r in records]
        batch["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return batch


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (and `<eos>`), each predicted from the one before."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def lr_at(step: int, total: int, settings: FinetuneSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    warmup = max(1, round(settings.warmup_share * total))
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def total_steps(settings: FinetuneSettings, train_examples: int) -> int:
    """The run's optimizer steps: --max-steps, else --epochs over the training split (check_settings
    has refused values below one step)."""
    if settings.max_steps is not None:
        return settings.max_steps
    return max(1, math.ceil(settings.epochs * train_examples / settings.batch_size))


def batch_for(step: int, train: Sequence[Record], settings: FinetuneSettings) -> list[Record]:
    """The records of `step`: epoch after epoch of a seeded shuffle, so a resumed run sees what it would have."""
    per_epoch = max(1, len(train) // settings.batch_size) if len(train) >= settings.batch_size else 1
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([settings.seed, epoch]).permutation(len(train))
    if len(train) < settings.batch_size:
        order = np.resize(order, settings.batch_size)
    start = position * settings.batch_size
    return [train[int(i)] for i in order[start : start + settings.batch_size]]


def load_model(settings: FinetuneSettings, location: str, device: str) -> tuple[Any, Any]:
    """The transformers model (peft-wrapped for LoRA) and processor, in bf16 on a GPU, float32 on a CPU."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        model: Any = PaliGemmaForConditionalGeneration.from_pretrained(
            location, dtype=dtype, attn_implementation="sdpa"
        )
        processor = PaliGemmaProcessor.from_pretrained(location)
    except OSError as e:
        raise FinetuneError(
            f"cannot load {location} ({e}). For a gated hub checkpoint, log in (`hf auth login`)."
        ) from e
    model.to(device)
    if settings.method == "full":
        model.train()
        return model, processor
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha or 2 * settings.lora_rank,
        target_modules=LORA_TARGETS,
        lora_dropout=0.0,
        bias="none",
    )
    model = get_peft_model(model, config)
    model.train()
    return model, processor


def save_state(model: Any, optimizer: Any, step: int, losses: list[float], settings: FinetuneSettings) -> None:
    """The resumable state in OUT/checkpoint: weights or adapter, optimizer, step, losses, settings."""
    import torch

    folder, partial, old = (settings.out / (CHECKPOINT_DIR + end) for end in ("", ".partial", ".old"))
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _save_weights(model, partial / "weights.safetensors", settings.method)
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    state = {"step": step, "losses": losses, "settings": _jsonable(settings)}
    (partial / "state.json").write_text(json.dumps(state))  # last: a partial folder with it is whole
    # Two renames, then the old one goes: a run killed anywhere here leaves a whole checkpoint
    # under one of the three names, which `checkpoint_folder` finds.
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    partial.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_folder(out: Path) -> Path | None:
    """The newest whole checkpoint in OUT: `checkpoint`, else a `checkpoint.partial` whose state was
    written (a save killed between its renames), else the `checkpoint.old` it replaced; None if none."""
    for end in ("", ".partial", ".old"):
        if (out / (CHECKPOINT_DIR + end) / "state.json").is_file():
            return out / (CHECKPOINT_DIR + end)
    return None


def saved_state(out: Path) -> tuple[Path, dict[str, Any]]:
    """The newest whole checkpoint in OUT and its state.json; FinetuneError when there is none."""
    folder = checkpoint_folder(out)
    if folder is None:
        raise FinetuneError(f"--resume: there is no checkpoint in {out}; run without --resume to start.")
    return folder, json.loads((folder / "state.json").read_text())


def load_state(model: Any, optimizer: Any, settings: FinetuneSettings) -> tuple[int, list[float]]:
    """Restore OUT/checkpoint into `model` and `optimizer`; (step done, losses)."""
    import torch

    folder, state = saved_state(settings.out)
    _load_weights(model, folder / "weights.safetensors", settings.method)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return int(state["step"]), [float(v) for v in state["losses"]]


# What a resumed run must share with the run it continues: its data, its split and every choice
# that shapes the steps (more or fewer steps, the device and how often to save may change).
RESUME_KEYS: Final = (
    "model", "data", "images", "task", "method", "batch_size", "eval_split", "lora_rank", "lora_alpha",
    "warmup_share", "seed", "vae", "lang",
)  # fmt: skip
_PATH_KEYS: Final = ("data", "images", "vae")
MAX_LORA_RANK: Final = 512  # the largest rank vLLM serves (--max-lora-rank)


def check_settings(settings: FinetuneSettings) -> int:
    """Refuse what cannot run or would harm, before the data or the model load; the step a resumed
    run has done (0 for a new one)."""
    if settings.batch_size < 1:
        raise FinetuneError("--batch-size must be at least 1.")
    if settings.save_every < 1:
        raise FinetuneError("--save-every must be at least 1 (steps between checkpoints).")
    if settings.max_steps is not None and settings.max_steps < 1:
        raise FinetuneError("--max-steps must be at least 1.")
    if settings.max_steps is None and not settings.epochs > 0:
        raise FinetuneError("--epochs must be positive.")
    if settings.lr is not None and not (math.isfinite(settings.lr) and settings.lr > 0):
        raise FinetuneError(f"--lr must be a positive number, got {settings.lr}.")
    if settings.method == "lora" and not 1 <= settings.lora_rank <= MAX_LORA_RANK:
        raise FinetuneError(
            f"--lora-rank must be 1 to {MAX_LORA_RANK} (the ranks vLLM serves), got {settings.lora_rank}."
        )
    if settings.out.exists() and not settings.out.is_dir():
        raise FinetuneError(f"--out {settings.out} is a file; give a folder for the run.")
    if settings.resume:
        return _resumed_step(settings)
    if checkpoint_folder(settings.out) is not None:
        raise FinetuneError(f"{settings.out} already holds a run: --resume to continue it, or choose another --out.")
    if settings.out.is_dir() and (present := sorted(p.name for p in settings.out.iterdir())):
        raise FinetuneError(
            f"--out {settings.out} is not empty ({', '.join(present[:5])}{', ...' if len(present) > 5 else ''}): a run "
            "writes its weights, README.md and eval.json there. Choose a new or empty folder."
        )
    return 0


def _resumed_step(settings: FinetuneSettings) -> int:
    """The step the checkpoint in OUT reached, once its settings are found to be these."""
    _, state = saved_state(settings.out)
    saved, asked = state["settings"], _jsonable(settings)
    saved["lr"], asked["lr"] = saved.get("lr") or DEFAULT_LR[saved["method"]], settings.learning_rate
    changed = []
    for key in ("lr", *RESUME_KEYS):
        before, now = saved.get(key), asked[key]
        if key in _PATH_KEYS and before is not None and now is not None:
            before, now = str(Path(before).resolve()), str(Path(now).resolve())
        if before != now:
            changed.append(f"{key} {saved.get(key)!r} -> {asked[key]!r}")
    if changed:
        raise FinetuneError(
            f"--resume: the checkpoint in {settings.out} was made with other settings ({'; '.join(changed)}). "
            "Resume with the same data and settings (only --max-steps/--epochs, --save-every and --device may "
            "change), or start a new run in another --out."
        )
    return int(state["step"])


def _save_weights(model: Any, path: Path, method: Method) -> None:
    """The trainable weights: the adapter's (LoRA) or the whole model's (full), under the model's own names."""
    from safetensors.torch import save_file, save_model

    if method == "lora":
        from peft import get_peft_model_state_dict

        save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}, path)
    else:
        save_model(model, str(path))


def _load_weights(model: Any, path: Path, method: Method) -> None:
    from safetensors.torch import load_file, load_model

    if method == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(path))
    else:
        load_model(model, str(path))


def _jsonable(settings: FinetuneSettings) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}


def finetune(settings: FinetuneSettings) -> FinetuneResult:
    """Run the whole fine-tuning as `settings` ask and write OUT; see the module docstring."""
    import torch
    from tqdm import tqdm

    started = time.monotonic()
    resumed_at = check_settings(settings)
    source = resolve(settings.model)
    records = finetune_data.load_records(
        settings.data, settings.images, settings.task, encoder=mask_encoder(settings, source), lang=settings.lang
    )
    train, held_out = finetune_data.split(records, settings.eval_split, settings.seed)
    if not train:
        raise FinetuneError("no examples are left to train on: lower --eval-split or add data.")
    steps = total_steps(settings, len(train))
    if resumed_at > steps:
        raise FinetuneError(
            f"--resume: the checkpoint has done {resumed_at} steps, more than the {steps} asked; "
            f"ask for at least {resumed_at} (--max-steps) to go on."
        )
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FinetuneError(f"--device {device}: this machine has no CUDA GPU torch can use; pass --device cpu.")
    torch.manual_seed(settings.seed)
    model, processor = load_model(settings, source.location, device)
    if warning := _answers_past_the_budget(records, processor.tokenizer):
        print(warning, file=sys.stderr)
    collate = Collator(processor)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    settings.out.mkdir(parents=True, exist_ok=True)
    done, losses = load_state(model, optimizer, settings) if settings.resume else (0, [])
    progress = tqdm(range(done, steps), desc=f"finetune {settings.method}", unit="step", initial=done, total=steps)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, settings)
        batch = {k: v.to(device) for k, v in collate(batch_for(step, train, settings)).items()}
        batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
        labels = batch.pop("labels")
        loss = answer_loss(model(**batch).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
        progress.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if (step + 1) % settings.save_every == 0 and step + 1 < steps:
            save_state(model, optimizer, step + 1, losses, settings)
    save_state(model, optimizer, steps, losses, settings)
    score = None
    if held_out:
        decoder = _mask_decoder(settings, source) if settings.task == "segment" else None
        answers = finetune_eval.generate_answers(model, processor, held_out, batch_size=settings.batch_size)
        score = finetune_eval.score(settings.task, held_out, answers, decoder)
    result = FinetuneResult(
        out=settings.out,
        steps=steps,
        train_examples=len(train),
        eval_examples=len(held_out),
        metric=finetune_eval.METRIC_NAMES[settings.task],
        score=score,
        minutes=(time.monotonic() - started) / 60,
    )
    _write_outputs(model, processor, settings, source, result, losses)
    return result


def _answers_past_the_budget(records: Sequence[Record], tokenizer: Any) -> str | None:
    """A warning when some answers are longer than the tokens the tools ask for with their prompt:
    trained as written, they come back cut off when served (a dense detect answer loses objects)."""
    long = []
    for record in records:
        budget = finetune_eval.answer_budget(record.prefix)
        tokens = len(tokenizer(record.suffix, add_special_tokens=False)["input_ids"]) + 1  # and <eos>
        if tokens > budget:
            long.append((tokens, budget, record.image.name))
    if not long:
        return None
    tokens, budget, name = max(long)
    return (
        f"warning: {len(long)} of {len(records)} answers are longer than the tokens the tools ask for with their "
        f"prompt (the longest: {tokens} tokens against {budget}, {name}); served, they come back cut off. "
        "Split such images into fewer objects per prompt, or raise max_tokens where you call the model."
    )


def _mask_decoder(settings: FinetuneSettings, source: ModelSource) -> Any:
    from tools.vae_checkpoint import load_vae_decoder

    path = vae_path(settings, source)
    return load_vae_decoder(path, download=False)


def _write_outputs(
    model: Any,
    processor: Any,
    settings: FinetuneSettings,
    base: ModelSource,
    result: FinetuneResult,
    losses: list[float],
) -> None:
    """The adapter or full checkpoint, the model card and eval.json in OUT."""
    from server.tiny_model import save_checkpoint
    from training import model_card

    card = model_card.text(settings, base, result)
    if settings.method == "lora":
        model.peft_config["default"].base_model_name_or_path = base.location
        model.save_pretrained(settings.out)
        (settings.out / "README.md").write_text(card)
    else:
        model.eval()
        save_checkpoint(model, processor, settings.out, card)
    summary = {**asdict(replace(result, out=Path(str(result.out)))), "out": str(result.out), "losses": losses}
    (settings.out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
