"""Teach the tiny trained PaliGemma 2 a shape it never saw (a star) with LoRA, and serve it with vLLM.

    .venv/bin/python -m benchmarks.finetune_star [--train 300] [--test 100] [--steps 200] [--batch-size 8]

1. Draws star scenes (training/star_scenes.py) as COCO: a training set and a held-out one
   from another seed.
2. `paligemma finetune --model tiny --lora` on the training set (training/finetune.py).
3. Serves `tiny` with vLLM twice: plain, then with `--lora star=ADAPTER`, and asks, through the
   typed tools (`locate_objects`), `detect star` on the held-out star scenes and
   `detect circle ; square ; triangle` on held-out scenes of the model's own domain, as the base
   model and as the adapter (picked by model name).
4. Prints AP50 (pycocotools, training/finetune_eval.py) for each, and how many of the base
   model's answers the LoRA-enabled server left unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from benchmarks.common import print_table
from server import serve
from server.lora import read_adapters
from server.model_source import TINY_NAME
from server.process import free_port
from server.vllm_command import ServeOptions
from tools.models import Detections
from training import evaluate, finetune_data, star_scenes
from training.finetune import FinetuneSettings, finetune
from training.finetune_data import Instance
from training.finetune_eval import detection_ap50

ADAPTER = "star"
TEST_SEED = 1_000_033


def star_truth(coco: Path) -> list[tuple[Path, tuple[Instance, ...], int, int]]:
    """(image, its stars, width, height) of every held-out scene."""
    records = finetune_data.load_records(coco, coco.parent / "images", "detect")
    by_image: dict[Path, tuple[Instance, ...]] = {}
    sizes: dict[Path, tuple[int, int]] = {}
    for record in records:
        by_image.setdefault(record.image, ())
        sizes[record.image] = (record.width, record.height)
        if record.prefix == f"detect {star_scenes.STAR}":
            by_image[record.image] = record.instances
    return [(path, stars, *sizes[path]) for path, stars in sorted(by_image.items())]


async def _ask(base_url: str, model: str, jobs: Sequence[tuple[Image.Image, list[str]]]) -> list[Detections]:
    import tools

    async with tools.PaliGemmaClient(base_url=base_url, model=model, max_concurrency=8) as client:
        return list(await asyncio.gather(*(tools.alocate_objects(im, names, client=client) for im, names in jobs)))


def ask(base_url: str, model: str, jobs: Sequence[tuple[Image.Image, list[str]]]) -> list[Detections]:
    return asyncio.run(_ask(base_url, model, jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--train", type=int, default=300, help="training scenes")
    parser.add_argument("--test", type=int, default=100, help="held-out star scenes (and scenes of the own domain)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--work", type=Path, help="folder for the data and the adapter (default: a temporary one)")
    parser.add_argument("--reuse-adapter", action="store_true", help="serve the adapter already in WORK/star")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        run(work, args)


def run(work: Path, args: argparse.Namespace) -> None:
    train_coco = star_scenes.write_coco(work / "train", args.train, seed=0)
    test_coco = star_scenes.write_coco(work / "test", args.test, seed=TEST_SEED)
    adapter_dir = work / ADAPTER
    if not args.reuse_adapter:
        settings = FinetuneSettings(
            model=TINY_NAME,
            data=train_coco,
            images=train_coco.parent / "images",
            task="detect",
            out=adapter_dir,
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            lora_rank=args.rank,
            eval_split=0.1,
            save_every=max(50, args.steps // 4),
        )
        result = finetune(settings)
        held = "-" if result.score is None else f"{result.score:.3f}"
        print(f"finetune: {result.steps} steps in {result.minutes:.1f} min; held-out AP50 (transformers) {held}")

    stars = star_truth(test_coco)
    star_jobs = [(Image.open(path).convert("RGB"), [star_scenes.STAR]) for path, *_ in stars]
    own = evaluate.held_out_scenes(args.test)
    own_jobs = [(scene.image, list(evaluate.ALL_SHAPES)) for scene in own]

    def star_ap(found: list[Detections]) -> float:
        ap = detection_ap50([(truth, d) for (_, truth, *_), d in zip(stars, found, strict=True)])
        assert ap is not None, "every test scene holds a star"
        return ap

    def own_ap(found: list[Detections]) -> float:
        return evaluate.ap50(own, dict(enumerate(found)))

    answers: dict[str, tuple[list[Detections], list[Detections]]] = {}
    seconds: dict[str, float] = {}
    plain = serve.plan(ServeOptions(model=TINY_NAME, port=free_port()), device="cpu")
    base_name = plain.command.served_model_name
    with serve.running(plain, echo=False):
        started = time.perf_counter()
        answers["base, plain server"] = (
            ask(plain.command.base_url, base_name, star_jobs),
            ask(plain.command.base_url, base_name, own_jobs),
        )
        seconds["base, plain server"] = time.perf_counter() - started
    adapters = read_adapters([f"{ADAPTER}={adapter_dir}"])
    with_lora = serve.plan(ServeOptions(model=TINY_NAME, port=free_port(), loras=adapters), device="cpu")
    with serve.running(with_lora, echo=False):
        url = with_lora.command.base_url
        for label, model in (("base, --lora server", base_name), (f"adapter {ADAPTER!r}", ADAPTER)):
            started = time.perf_counter()
            answers[label] = (ask(url, model, star_jobs), ask(url, model, own_jobs))
            seconds[label] = time.perf_counter() - started

    rows = [
        [label, f"{star_ap(s):.3f}", f"{own_ap(o):.3f}", f"{seconds[label]:.0f}"] for label, (s, o) in answers.items()
    ]
    print_table(
        f"AP50 served by vLLM on CPU: {len(stars)} held-out star scenes, {len(own)} of the tiny model's own domain",
        ["model", "AP50 stars (`detect star`)", "AP50 own shapes (`detect circle ; square ; triangle`)", "seconds"],
        rows,
    )
    plain_s, plain_o = answers["base, plain server"]
    lora_s, lora_o = answers["base, --lora server"]
    same = sum(a.raw_text == b.raw_text for a, b in zip([*plain_s, *plain_o], [*lora_s, *lora_o], strict=True))
    print(f"base model answers identical with and without --lora: {same}/{len(plain_s) + len(plain_o)}")


if __name__ == "__main__":
    main()
