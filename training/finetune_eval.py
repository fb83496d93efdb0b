"""Score fine-tuned answers on the held-out split, read with the tools' own parsers.

detect: COCO AP at IoU 0.5 (pycocotools) with the answers' order as their confidence; segment:
the mean IoU of every true mask with the best mask answered for its label; the other tasks:
the share of answers equal to an expected text of the same image and prompt (whitespace
trimmed; COCO gives an image five captions, any of which is right). Answers come from
transformers' greedy `generate` (`generate_answers`), or from a served endpoint through the
tools (benchmarks/finetune_star.py), and are scored alike.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tools import parsing
from tools.models import Detections, Segments
from tools.tasks import prompt_budget
from training.evaluate import mask_iou
from training.finetune_data import Instance, Record, Task, load_upright

if TYPE_CHECKING:
    from tools.vae_decoder import VaeDecoder

METRIC_NAMES: dict[Task, str] = {
    "detect": "AP50",
    "segment": "mask mIoU",
    "ocr": "exact match",
    "caption": "exact match",
    "answer": "exact match",
}


def detection_ap50(pairs: Sequence[tuple[Sequence[Instance], Detections]]) -> float | None:
    """COCO AP50 over (truth, answer) pairs, each pair one image and prompt; answers carry no scores,
    so earlier objects rank higher (the model's own order). None when no pair holds an object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted(
        {o.label for truth, _ in pairs for o in truth} | {d.label for _, found in pairs for d in found.objects}
    )
    ids = {label: i + 1 for i, label in enumerate(labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for image_id, (truth, found) in enumerate(pairs, start=1):
        images.append({"id": image_id, "width": found.image_width, "height": found.image_height})
        for o in truth:
            x0, y0, x1, y1 = o.box_xyxy
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": ids[o.label],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })  # fmt: skip
        for rank, d in enumerate(found.objects):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": ids[d.label],
                    "bbox": list(d.box.coco_xywh),
                    "score": 1 - rank / 1e3,
                }
            )
    if not annotations:
        return None  # nothing to find: AP is not defined, whatever was answered
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth_coco = COCO()
        truth_coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i} for i in ids.values()],
        }
        truth_coco.createIndex()
        evaluation = COCOeval(truth_coco, truth_coco.loadRes(results), "bbox")
        evaluation.params.catIds = sorted({ids[o.label] for truth, _ in pairs for o in truth})  # classes with truth
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


def mask_miou(pairs: Sequence[tuple[Sequence[Instance], Segments]]) -> float | None:
    """Mean over true masks of the best IoU with an answered mask of the same label (0 when none);
    None when there is no true mask."""
    ious = []
    for truth, found in pairs:
        for o in truth:
            true_mask = o.mask
            if true_mask is None:
                continue
            answered = [mask_iou(true_mask, s.mask) for s in found.objects if s.label == o.label and s.mask is not None]
            ious.append(max(answered, default=0.0))
    return float(np.mean(ious)) if ious else None


def score(
    task: Task, records: Sequence[Record], answers: Sequence[str], decoder: VaeDecoder | None = None
) -> float | None:
    """The task's metric (METRIC_NAMES) for the raw answers to `records`, read with the tools' parsers;
    None when the records hold nothing to find."""
    if task == "detect":
        detections = [
            parsing.parse_detections(a, width=r.width, height=r.height, prompt=r.prefix)
            for r, a in zip(records, answers, strict=True)
        ]
        return detection_ap50([(r.instances, d) for r, d in zip(records, detections, strict=True)])
    if task == "segment":
        segments = [
            parsing.parse_segments(a, width=r.width, height=r.height, decoder=decoder, prompt=r.prefix)
            for r, a in zip(records, answers, strict=True)
        ]
        return mask_miou([(_true_masks(r, decoder), s) for r, s in zip(records, segments, strict=True)])
    # Any expected text of the same image and prompt counts (COCO gives an image five captions).
    expected: dict[tuple[str, str], set[str]] = {}
    for r in records:
        expected.setdefault((str(r.image), r.prefix), set()).add(r.suffix.strip())
    return float(
        np.mean([a.strip() in expected[str(r.image), r.prefix] for r, a in zip(records, answers, strict=True)])
    )


def _true_masks(record: Record, decoder: VaeDecoder | None) -> Sequence[Instance]:
    """The record's objects with their masks; JSON Lines targets carry only <seg> codes, so their
    masks are the codes decoded by the same VQ-VAE that decodes the answers."""
    if decoder is None or all(o.rle is not None for o in record.instances):
        return record.instances
    target = parsing.parse_segments(
        record.suffix, width=record.width, height=record.height, decoder=decoder, prompt=record.prefix
    )
    return [Instance.with_mask(o.label, o.box.xyxy, o.mask) for o in target.objects]


def answer_budget(prompt: str) -> int:
    """The tokens the tools ask for with `prompt` (its task word's), 256 for a word they do not send."""
    return prompt_budget(prompt)


def generate_answers(model: Any, processor: Any, records: Sequence[Record], *, batch_size: int = 8) -> list[str]:
    """Greedy answers of a transformers PaliGemma (peft-wrapped or not) to every record's prompt."""
    import torch

    answers: dict[int, str] = {}
    by_prompt: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_prompt.setdefault(record.prefix, []).append(i)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    model.eval()
    for prompt, indices in by_prompt.items():
        budget = answer_budget(prompt)
        for start in range(0, len(indices), batch_size):  # one prompt per batch: equal lengths, no padding
            chunk = indices[start : start + batch_size]
            images = [load_upright(records[i].image, str(records[i].image)) for i in chunk]
            inputs = processor(text=["<image>" + prompt] * len(chunk), images=images, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=budget, do_sample=False)
            texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            answers.update(zip(chunk, texts, strict=True))
    return [answers[i] for i in range(len(records))]
