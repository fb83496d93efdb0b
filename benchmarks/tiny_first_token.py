"""Why greedy decoding answers `<eos>`: the trained tiny model's first answer token, measured.

    .venv/bin/python -m benchmarks.tiny_first_token [--scenes 40] [--model DIR]

For held-out scenes and a shape each holds, the next-token distribution after `detect SHAPE`,
`segment SHAPE` and `detect circle ; square ; triangle` (transformers, PaliGemma's prefix
mask), and after `detect ABSENT` for a shape the scene does not hold (where `<eos>` is right):
the probability of `<eos>`, of all `<loc>` tokens together, and of the single best
`<loc>` bin. Greedy decoding answers nothing whenever `<eos>` beats the best bin, however much
probability the `<loc>` tokens hold together. Prints one table of medians and that share, and
how much the first token changes with the shape named (a model that ignores the name: ~0).
Then where each attention head of the text model looks from the last prompt token, on scenes
holding two or three kinds of shape: its attention on the cells of the shape named against its
attention on the other shapes' cells (a head that finds what is named: the first far above).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from server.model_source import TINY_NAME, resolve
from tools import prompts
from training import evaluate, patch_targets
from training.prefix_lm import REFERENCE_ATTENTION
from training.train_tiny import name_kls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--model", default=TINY_NAME, help="tiny (the shipped trained model) or a checkpoint folder")
    args = parser.parse_args()

    import torch
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    folder = Path(resolve(args.model).location)
    model: Any = PaliGemmaForConditionalGeneration.from_pretrained(folder, attn_implementation=REFERENCE_ATTENTION)
    model.eval()
    processor = PaliGemmaProcessor.from_pretrained(folder)
    first_loc = processor.tokenizer.convert_tokens_to_ids("<loc0000>")
    eos = processor.tokenizer.eos_token_id
    measured: dict[str, list[tuple[float, float, float]]] = {}
    name_dependence: list[float] = []  # KL between the first tokens after `detect A` and `detect B`
    looks: dict[tuple[int, int], list[tuple[float, float]]] = {}  # (layer, head) -> (on named, on others)
    config = model.config.vision_config
    grid = config.image_size // config.patch_size
    for scene in evaluate.held_out_scenes(args.scenes):
        if not scene.objects:
            continue
        one_name = []
        kinds = patch_targets.patch_targets(scene, grid).kind
        several = len({o.shape for o in scene.objects}) >= 2
        for asked_shape in evaluate.ALL_SHAPES:
            inputs = processor(text=[prompts.detect((asked_shape,))], images=[scene.image], return_tensors="pt")
            with torch.inference_mode():
                outputs = model(**inputs, output_attentions=True)
            one_name.append(outputs.logits[0, -1].log_softmax(-1))
            named = kinds == patch_targets.KINDS.index(asked_shape)
            others = (kinds >= 1) & (kinds <= len(evaluate.ALL_SHAPES)) & ~named
            if several and named.any():
                for layer, weights in enumerate(outputs.attentions):
                    for head, row in enumerate(weights[0, :, -1, : grid * grid].numpy()):
                        looks.setdefault((layer, head), []).append((float(row[named].sum()), float(row[others].sum())))
        name_dependence += name_kls(torch.stack(one_name)[None]).tolist()
        shape = scene.objects[0].shape
        absent = [s for s in evaluate.ALL_SHAPES if all(o.shape != s for o in scene.objects)]
        asked = {
            "detect SHAPE": prompts.detect((shape,)),
            "segment SHAPE": prompts.segment((shape,)),
            "detect circle ; square ; triangle": prompts.detect(evaluate.ALL_SHAPES),
        }
        if absent:  # the control: here `<eos>` is the right answer
            asked["detect ABSENT (not in the scene)"] = prompts.detect((absent[0],))
        for name, prompt in asked.items():
            inputs = processor(text=[prompt], images=[scene.image], return_tensors="pt")
            with torch.inference_mode():
                probs = model(**inputs).logits[0, -1].softmax(-1)
            locs = probs[first_loc : first_loc + 1024]
            measured.setdefault(name, []).append((float(probs[eos]), float(locs.sum()), float(locs.max())))

    rows = []
    for name, values in measured.items():
        eos_p, loc_sum, loc_best = (statistics.median(v[i] for v in values) for i in range(3))
        eos_wins = sum(v[0] > v[2] for v in values) / len(values)
        rows.append([name, str(len(values)), f"{eos_p:.3f}", f"{loc_sum:.3f}", f"{loc_best:.3f}", f"{eos_wins:.2f}"])
    print_table(
        f"First answer token of the tiny model at {folder.name}, held-out scenes (ABSENT: a shape not in the scene)",
        ["prompt", "scenes", "P(<eos>) median", "P(any <loc>) median", "P(best <loc>) median", "share <eos> wins"],
        rows,
    )
    print(
        "how much the first token depends on the shape named: median KL(detect A || detect B) over pairs "
        f"of shapes, {len(name_dependence)} pairs: {statistics.median(name_dependence):.4f} nats"
    )
    print()
    print_table(
        "Where each text-model head looks from the last prompt token of `detect SHAPE` (scenes of two or three"
        " kinds of shape, SHAPE among them): its attention on the named shape's cells and on the other shapes'",
        ["layer", "head", "cases", "on the named shape, median", "on other shapes, median", "share on named, median"],
        [
            [
                str(layer),
                str(head),
                str(len(values)),
                f"{statistics.median(v[0] for v in values):.2f}",
                f"{statistics.median(v[1] for v in values):.2f}",
                f"{statistics.median(v[0] / max(v[0] + v[1], 1e-9) for v in values):.2f}",
            ]
            for (layer, head), values in sorted(looks.items())
        ],
    )


if __name__ == "__main__":
    main()
