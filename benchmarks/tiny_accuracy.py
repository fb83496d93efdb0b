"""Accuracy of the trained tiny PaliGemma 2 on held-out scenes: served by vLLM against transformers.

    .venv/bin/python -m benchmarks.tiny_accuracy [--scenes 300] [--model DIR]

Held-out scenes come from a seed training never drew from (docs/synthetic-domain.md); beside
them, scenes of one word each read as two rows of their own: common English words training
never drew, and the check words (`HELLO`, `VISION`, ...) a test of reading is likely to pick
(training.common_words). The
same questions go (1) through the typed tools to `paligemma serve --model tiny` (vLLM with
PaliGemma's prefix-LM attention, the default `--attention prefix`, docs/attention.md) and (2) to
transformers in-process with PaliGemma's prefix-LM mask and (3) with a causal mask. All
answers are parsed by the tools' parsers and scored by `training.evaluate`. Prints one table.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import print_table, use_own_vae
from server import serve
from server.model_source import TINY_NAME, resolve
from server.process import free_port
from server.vllm_command import ServeOptions
from tools.tiny_shapes_model import TINY_SHAPES_MODEL
from tools.vae_checkpoint import load_vae_decoder
from training import common_words, evaluate

GOALS = {
    "detection AP50": 0.9,
    "matched box IoU": 0.8,
    "mask mIoU": 0.75,
    "OCR exact": 0.9,
    "VQA exact": 0.9,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--model", default=TINY_NAME, help="tiny (the shipped trained model) or a checkpoint folder")
    parser.add_argument("--common-words", type=int, default=200, help="scenes of held-out common English words")
    parser.add_argument("--per-check-word", type=int, default=6, help="scenes of each check word (HELLO, ...)")
    parser.add_argument("--baselines-only", action="store_true", help="print the commonest-answer rates and stop")
    args = parser.parse_args()
    held_out = evaluate.held_out_scenes(args.scenes)
    requests = [r for i, s in enumerate(held_out) for r in evaluate.requests_for(i, s)]
    word_sets = {  # row name: scenes of one word each
        f"OCR exact, {args.common_words} held-out common English words": evaluate.common_word_scenes(args.common_words),
        f"OCR exact, the {len(common_words.CHECK_WORDS)} check words x {args.per_check_word}": (
            evaluate.check_word_scenes(args.per_check_word)
        ),
    }
    word_requests = {row: evaluate.ocr_requests(word_scenes) for row, word_scenes in word_sets.items()}
    baselines = evaluate.commonest_answer_rates(requests)
    print(
        "always the commonest answer: " + ", ".join(f"VQA {task} exact {rate:.3f}" for task, rate in baselines.items())
    )
    source = resolve(args.model)
    size_px = evaluate.model_input_size_px(Path(source.location))
    words = [s for s in held_out if s.word is not None]
    lengths = Counter(evaluate.length_kind(r.expected) for r in requests if r.task == "ocr")
    widths = Counter(evaluate.letters_kind(evaluate.letter_width_px(s, size_px)) for s in words)
    misread = Counter(kind for r in requests if r.task == "ocr" for kind in evaluate.misread_kinds(r.expected))
    print("words to read: " + ", ".join(f"{kind} {n}" for kind, n in (lengths + widths + misread).items()))
    if args.baselines_only:
        return
    use_own_vae(args.model)
    columns: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}

    # served under the tiny model's name, a `train-tiny` folder gets what the shipped model gets
    options = ServeOptions(model=args.model, port=free_port(), served_model_name=TINY_SHAPES_MODEL)
    the_plan = serve.plan(options, device="cpu")
    with serve.running(the_plan, echo=False):
        started = time.perf_counter()
        served = evaluate.served_results(
            the_plan.command.base_url, the_plan.command.served_model_name, held_out, requests
        )
        seconds["vLLM served (prefix)"] = time.perf_counter() - started
        words_read = {
            row: evaluate.ocr_exact(
                word_requests[row],
                evaluate.served_results(
                    the_plan.command.base_url, the_plan.command.served_model_name, word_scenes, word_requests[row]
                ),
            )
            for row, word_scenes in word_sets.items()
        }
    columns["vLLM served (prefix)"] = evaluate.score(held_out, requests, served, input_size_px=size_px) | words_read

    decoder = load_vae_decoder(model=source.served_name)  # $PALIGEMMA_VAE_PATH first
    for attention in ("prefix", "causal"):
        name = f"transformers ({attention})"
        started = time.perf_counter()
        results = evaluate.transformers_results(
            Path(source.location), held_out, requests, attention=attention, decoder=decoder
        )
        seconds[name] = time.perf_counter() - started
        columns[name] = evaluate.score(held_out, requests, results, input_size_px=size_px) | {
            row: evaluate.ocr_exact(
                word_requests[row],
                evaluate.transformers_results(
                    Path(source.location), word_scenes, word_requests[row], attention=attention, decoder=None
                ),
            )
            for row, word_scenes in word_sets.items()
        }

    names = list(columns)
    metrics = list(next(iter(columns.values())))
    rows = [[m, *(f"{columns[n][m]:.3f}" for n in names), f">= {GOALS[m]}" if m in GOALS else ""] for m in metrics]
    rows.append(["seconds", *(f"{seconds[n]:.0f}" for n in names), ""])
    served_name, prefix_name = names[0], names[1]
    headline = [m for m in metrics if ", " not in m]  # not the breakdowns of OCR by word (a few dozen words each)
    gap = max(abs(columns[served_name][m] - columns[prefix_name][m]) for m in headline)
    print_table(
        f"Tiny trained PaliGemma 2, {len(held_out)} held-out scenes, {len(requests)} questions",
        ["metric", *names, "goal"],
        rows,
    )
    print(f"largest gap served vs transformers prefix (rows without a comma): {gap:.3f}")


if __name__ == "__main__":
    main()
