"""Score a PaliGemma on held-out scenes of the synthetic domain, through the tools' own parsers.

Two ways to get the answers, scored alike: the served endpoint through the typed tools
(`served_results`), and transformers in-process with the prefix-LM mask or the causal one
(`transformers_results`). The metrics (`score`): detection AP50 (pycocotools) and the mean
IoU of matched boxes, mask mIoU, OCR exact-word rate (and the share of the words' letters read
at their place), counting and colour VQA exact rates, and the exact rates of the answers in
sentences: captions, descriptions and generated questions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tools import parsing, prompts
from tools.models import AnswerResult, CaptionResult, Detections, QuestionResult, Segments, TextResult, ToolResult
from training import common_words, scenes, tasks
from training.prefix_lm import REFERENCE_ATTENTION

if TYPE_CHECKING:
    from tools.client import PaliGemmaClient
    from tools.vae_decoder import VaeDecoder

HELD_OUT_SEED = 1_000_003  # training draws from seed 0's stream; this one is never seen
COMMON_WORDS_SEED = HELD_OUT_SEED + 1  # the scenes of common words (and +1 those of the check words)
ALL_SHAPES: tuple[str, ...] = scenes.SHAPES
Task = Literal["detect", "segment", "ocr", "count", "color", "caption", "describe", "question"]
CAPTION_DETAIL: dict[str, Literal["short", "long"]] = {"caption": "short", "describe": "long"}  # task -> detail


@dataclass(frozen=True)
class Request:
    """One question about one scene: the tool to call and the prompt it sends."""

    scene: int
    task: Task
    prompt: str
    subject: str = ""  # the shape asked about (segment, count, color); the colour given (question)
    expected: str = ""


def held_out_scenes(count: int, seed: int = HELD_OUT_SEED) -> list[scenes.Scene]:
    rng = np.random.default_rng(seed)
    return [scenes.make_scene(rng) for _ in range(count)]


def common_word_scenes(count: int, seed: int = COMMON_WORDS_SEED) -> list[scenes.Scene]:
    """Scenes of one word each, a common English word training never drew (training.common_words)."""
    rng = np.random.default_rng(seed)
    held_out = scenes.WordList(common_words.held_out_words())
    return [scenes.make_scene(rng, kind="word", word_list=held_out) for _ in range(count)]


def check_word_scenes(per_word: int, seed: int = COMMON_WORDS_SEED + 1) -> list[scenes.Scene]:
    """`per_word` scenes of one word each for every check word (`HELLO`, `VISION`, ...: words a
    test of reading is likely to pick; held out from training)."""
    rng = np.random.default_rng(seed)
    return [
        scenes.make_scene(rng, kind="word", word_list=scenes.WordList((word,)))
        for word in common_words.CHECK_WORDS
        for _ in range(per_word)
    ]


def ocr_requests(held_out: Sequence[scenes.Scene]) -> list[Request]:
    """`ocr` of every scene that holds a word."""
    return [
        Request(i, "ocr", prompts.ocr(), expected=scene.word.text)
        for i, scene in enumerate(held_out)
        if scene.word is not None
    ]


def ocr_exact(requests: Sequence[Request], results: Sequence[ToolResult]) -> float:
    """The share of `ocr` requests answered with exactly their word."""
    hits = [
        isinstance(result, TextResult) and result.text.strip() == request.expected
        for request, result in zip(requests, results, strict=True)
        if request.task == "ocr"
    ]
    return _mean(hits)


def requests_for(index: int, scene: scenes.Scene) -> list[Request]:
    """The questions asked of every scene (which ones depends on what it holds)."""
    out = [Request(index, "detect", prompts.detect(ALL_SHAPES))]
    for shape in sorted({o.shape for o in scene.objects}):
        out.append(Request(index, "segment", prompts.segment((shape,)), subject=shape))
    if scene.word is not None:
        out.append(Request(index, "ocr", prompts.ocr(), expected=scene.word.text))
    if scene.objects:
        asked = ALL_SHAPES[index % len(ALL_SHAPES)]
        n = sum(o.shape == asked for o in scene.objects)
        out.append(Request(index, "count", prompts.answer(f"how many {asked}s are there?", "en"), asked, str(n)))
        single = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
        if single:
            o = single[index % len(single)]
            question = prompts.answer(tasks.color_question(o.shape), "en")
            out.append(Request(index, "color", question, o.shape, o.color))
    out.append(Request(index, "caption", prompts.caption("short", "en"), expected=tasks.caption_text(scene)))
    if scene.objects:
        out.append(Request(index, "describe", prompts.caption("long", "en"), expected=tasks.describe_text(scene)))
    askable = list(tasks.askable_colors(scene).items())
    if askable:
        color, obj = askable[index % len(askable)]
        out.append(Request(index, "question", prompts.question(color, "en"), color, tasks.color_question(obj.shape)))
    return out


# --- answers from the served endpoint, through the typed tools --------------------------------


async def _served_one(client: PaliGemmaClient, request: Request, scene: scenes.Scene) -> ToolResult:
    import tools

    image = scene.image
    if request.task == "detect":
        return await tools.alocate_objects(image, list(ALL_SHAPES), client=client)
    if request.task == "segment":
        return await tools.asegment_objects(image, request.subject, client=client)
    if request.task == "ocr":
        return await tools.aread_text(image, client=client)
    if request.task in CAPTION_DETAIL:
        return await tools.acaption_image(image, detail=CAPTION_DETAIL[request.task], client=client)
    if request.task == "question":
        return await tools.agenerate_question(image, request.subject, client=client)
    question = request.prompt.removeprefix("answer en ")
    return await tools.aanswer_visual_question(image, question, client=client)


def served_results(
    base_url: str, model: str, held_out: Sequence[scenes.Scene], requests: Sequence[Request], *, concurrency: int = 8
) -> list[ToolResult]:
    """Every request through the tools against a served endpoint."""
    from tools.client import PaliGemmaClient

    async def run_all() -> list[ToolResult]:
        async with PaliGemmaClient(base_url=base_url, model=model, max_concurrency=concurrency) as client:
            return list(await asyncio.gather(*(_served_one(client, r, held_out[r.scene]) for r in requests)))

    return asyncio.run(run_all())


# --- answers from transformers in-process --------------------------------------------------


def transformers_results(
    model_dir: Path,
    held_out: Sequence[scenes.Scene],
    requests: Sequence[Request],
    *,
    attention: Literal["prefix", "causal"],
    decoder: VaeDecoder | None,
    batch_size: int = 16,
) -> list[ToolResult]:
    """Every request answered by transformers' greedy `generate`, parsed by the tools' parsers."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    from tools.tasks import MAX_TOKENS

    model: Any = PaliGemmaForConditionalGeneration.from_pretrained(model_dir, attn_implementation=REFERENCE_ATTENTION)
    model.eval()
    processor = PaliGemmaProcessor.from_pretrained(model_dir)
    answers: dict[int, str] = {}
    by_prompt: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        by_prompt.setdefault(request.prompt, []).append(i)
    for prompt, indices in by_prompt.items():
        budget = MAX_TOKENS["describe" if prompt.startswith("describe") else prompt.split(" ", 1)[0]]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            images = [held_out[requests[i].scene].image for i in chunk]
            inputs = processor(text=["<image>" + prompt] * len(chunk), images=images, return_tensors="pt")
            if attention == "causal":
                inputs.pop("token_type_ids", None)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=budget, do_sample=False)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            texts = processor.batch_decode(new_tokens, skip_special_tokens=True)  # type: ignore[no-untyped-call]
            answers.update(zip(chunk, texts, strict=True))
    return [_typed(requests[i], held_out[requests[i].scene], answers[i], decoder) for i in range(len(requests))]


def _typed(request: Request, scene: scenes.Scene, text: str, decoder: VaeDecoder | None) -> ToolResult:
    common: dict[str, Any] = {
        "image_width": scene.width,
        "image_height": scene.height,
        "prompt": request.prompt,
        "model": "transformers",
        "raw_text": text,
    }
    width, height = scene.width, scene.height
    if request.task == "detect":
        return parsing.parse_detections(text, width=width, height=height, prompt=request.prompt)
    if request.task == "segment":
        return parsing.parse_segments(text, width=width, height=height, decoder=decoder, prompt=request.prompt)
    if request.task == "ocr":
        return TextResult(**common, text=text.strip())
    if request.task in CAPTION_DETAIL:
        return CaptionResult(**common, detail=CAPTION_DETAIL[request.task], lang="en", caption=text.strip())
    if request.task == "question":
        return QuestionResult(**common, answer=request.subject, lang="en", question=text.strip())
    return AnswerResult(**common, question=request.prompt, lang="en", answer=text.strip())


def commonest_answer_rates(requests: Sequence[Request]) -> dict[str, float]:
    """How often always giving the commonest answer would be right, per VQA task: the bar to beat."""
    rates: dict[str, float] = {}
    for task in ("count", "color"):
        answers = [r.expected for r in requests if r.task == task]
        if answers:
            rates[task] = max(answers.count(a) for a in set(answers)) / len(answers)
    return rates


# --- scores ---------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched_ious(
    truth: Sequence[tuple[str, Sequence[float]]], found: Sequence[tuple[str, Sequence[float]]]
) -> list[float]:
    """Greedy one-to-one matching by IoU within a label: the IoU of every true box (0 if unmatched)."""
    pairs = sorted(
        ((box_iou(t, f), i, j) for i, (tl, t) in enumerate(truth) for j, (fl, f) in enumerate(found) if tl == fl),
        reverse=True,
    )
    best = [0.0] * len(truth)
    used_t: set[int] = set()
    used_f: set[int] = set()
    for iou, i, j in pairs:
        if iou > 0 and i not in used_t and j not in used_f:
            best[i] = iou
            used_t.add(i)
            used_f.add(j)
    return best


def ap50(held_out: Sequence[scenes.Scene], detections: dict[int, Detections]) -> float:
    """COCO AP at IoU 0.5 over the three shape classes (pycocotools); answers carry no scores, so all are 1."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    categories = [{"id": i + 1, "name": s} for i, s in enumerate(ALL_SHAPES)]
    ids = {s: i + 1 for i, s in enumerate(ALL_SHAPES)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for index, result in detections.items():
        scene = held_out[index]
        images.append({"id": index + 1, "width": scene.width, "height": scene.height})
        for o in scene.objects:
            x0, y0, x1, y1 = o.box_xyxy
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1, "category_id": ids[o.shape],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })  # fmt: skip
        for rank, d in enumerate(result.objects):
            if d.label in ids:
                score = 1.0 - rank * 1e-3  # answer order breaks ties
                results.append(
                    {"image_id": index + 1, "category_id": ids[d.label], "bbox": list(d.box.coco_xywh), "score": score}
                )
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# The two halves of the words' lengths (3-8 letters, docs/synthetic-domain.md) in the OCR figures.
SHORT_WORDS = "words of 3-5 letters"
LONG_WORDS = "words of 6-8 letters"
# And the width of a word's letters where the model sees them: its share of the image's width per
# letter, times the model's input size. The tiny model's patch is 16 px (docs/tiny-model.md).
NARROW_LETTERS = "letters under 16 px at the model's input"
MIDDLE_LETTERS = "letters of 16-24 px"
WIDE_LETTERS = "letters of 24 px and more"
# And the words with what the tiny model misreads most often: an `I`, the narrowest letter
# (mostly left out), or one letter twice in a row.
WITH_AN_I = "words with an I"
WITH_DOUBLED = "words with a doubled letter"


def length_kind(word: str) -> str:
    """Which half of the words' lengths (SHORT_WORDS or LONG_WORDS) `word` is in."""
    return SHORT_WORDS if len(word) <= 5 else LONG_WORDS


def letter_width_px(scene: scenes.Scene, input_size_px: int) -> float:
    """The mean width of the scene's word's letters in the model's square input."""
    if scene.word is None:
        raise ValueError("the scene has no word")
    x0, _, x1, _ = scene.word.box_xyxy
    return (x1 - x0) / scene.width * input_size_px / len(scene.word.text)


def letters_kind(width_px: float) -> str:
    """Which of the three widths of letters (NARROW_LETTERS ...) `width_px` is."""
    return NARROW_LETTERS if width_px < 16 else MIDDLE_LETTERS if width_px < 24 else WIDE_LETTERS


def misread_kinds(word: str) -> list[str]:
    """Which of WITH_AN_I and WITH_DOUBLED `word` is (either, both or neither)."""
    doubled = any(a == b for a, b in itertools.pairwise(word))
    return [kind for kind, holds in ((WITH_AN_I, "I" in word), (WITH_DOUBLED, doubled)) if holds]


def model_input_size_px(model_dir: Path) -> int:
    """The square input size of a PaliGemma checkpoint's vision tower, from its config.json."""
    config = json.loads((model_dir / "config.json").read_text())
    return int(config["vision_config"]["image_size"])


def score(
    held_out: Sequence[scenes.Scene],
    requests: Sequence[Request],
    results: Sequence[ToolResult],
    *,
    input_size_px: int,
) -> dict[str, float]:
    """The accuracy figures of docs/benchmarks.md for one set of answers, from a model whose
    input is `input_size_px` square."""
    detections: dict[int, Detections] = {}
    box_ious: list[float] = []
    mask_ious: list[float] = []
    exact: dict[str, list[bool]] = {task: [] for task in ("ocr", "count", "color", "caption", "describe", "question")}
    ocr_by_length: dict[str, list[bool]] = {SHORT_WORDS: [], LONG_WORDS: []}
    ocr_by_width: dict[str, list[bool]] = {NARROW_LETTERS: [], MIDDLE_LETTERS: [], WIDE_LETTERS: []}
    ocr_by_letters: dict[str, list[bool]] = {WITH_AN_I: [], WITH_DOUBLED: []}
    letters_right: list[bool] = []  # per letter of each word: the answer has it at its place
    for request, result in zip(requests, results, strict=True):
        scene = held_out[request.scene]
        if request.task == "detect" and isinstance(result, Detections):
            detections[request.scene] = result
            truth = [(o.shape, o.box_xyxy) for o in scene.objects]
            box_ious += [v for v in matched_ious(truth, [(d.label, d.box.xyxy) for d in result.objects]) if v >= 0.5]
        elif request.task == "segment" and isinstance(result, Segments):
            for o in scene.objects:
                if o.shape == request.subject:
                    truth_mask = scenes.object_mask(scene, o)
                    ious = [mask_iou(truth_mask, s.mask) for s in result.objects if s.mask is not None]
                    mask_ious.append(max(ious, default=0.0))
        elif isinstance(result, TextResult):
            read = result.text.strip()
            exact["ocr"].append(read == request.expected)
            ocr_by_length[length_kind(request.expected)].append(exact["ocr"][-1])
            ocr_by_width[letters_kind(letter_width_px(scene, input_size_px))].append(exact["ocr"][-1])
            for kind in misread_kinds(request.expected):
                ocr_by_letters[kind].append(exact["ocr"][-1])
            letters_right += [i < len(read) and read[i] == letter for i, letter in enumerate(request.expected)]
        elif isinstance(result, AnswerResult):
            exact[request.task].append(result.answer.strip() == request.expected)
        elif isinstance(result, CaptionResult):
            exact[request.task].append(result.caption.strip() == request.expected)
        elif isinstance(result, QuestionResult):
            exact["question"].append(result.question.strip() == request.expected)
    return {
        "detection AP50": ap50(held_out, detections),
        "matched box IoU": _mean(box_ious),
        "mask mIoU": _mean(mask_ious),
        "OCR exact": _mean(exact["ocr"]),
        **{f"OCR exact, {length}": _mean(hits) for length, hits in ocr_by_length.items()},
        **{f"OCR exact, {width}": _mean(hits) for width, hits in ocr_by_width.items()},
        **{f"OCR exact, {letters}": _mean(hits) for letters, hits in ocr_by_letters.items()},
        "OCR letters at their place": _mean(letters_right),
        "VQA count exact": _mean(exact["count"]),
        "VQA colour exact": _mean(exact["color"]),
        "VQA exact": _mean(exact["count"] + exact["color"]),
        "caption exact": _mean(exact["caption"]),
        "description exact": _mean(exact["describe"]),
        "generated question exact": _mean(exact["question"]),
    }


def _mean(values: Sequence[float | bool]) -> float:
    """Their mean; 0 for none."""
    return float(np.mean(values)) if values else 0.0
