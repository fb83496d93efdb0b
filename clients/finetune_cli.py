"""`paligemma finetune`: the command line of training/finetune.py (docs/finetune.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_finetune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune PaliGemma on your COCO or JSON Lines data (LoRA or full), then serve it"
        " (--lora NAME=OUT, or --model OUT)",
        description="Fine-tune with transformers (peft for LoRA) on COCO JSON (boxes; polygons or RLE for segment) or "
        'JSON Lines of {"image", "prefix", "suffix"}. Writes OUT: the adapter (serve it with `paligemma serve '
        "--model BASE --lora NAME=OUT`) or the whole checkpoint (`--full`: `paligemma serve --model OUT`), a model "
        "card and the held-out score. docs/finetune.md.",
    )
    p.add_argument("--model", required=True, help="tiny, a preset (see `paligemma presets`), a hub id or a folder")
    p.add_argument("--data", type=Path, required=True, help="COCO JSON (*.json) or JSON Lines (*.jsonl)")
    p.add_argument("--images", type=Path, required=True, help="the folder the data's image names are in")
    p.add_argument("--task", choices=["detect", "segment", "ocr", "caption", "answer"], required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the adapter or checkpoint, card and score")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--lora", dest="method", action="store_const", const="lora", help="LoRA adapter (default)")
    method.add_argument("--full", dest="method", action="store_const", const="full", help="train every weight")
    p.set_defaults(method="lora")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: --epochs over the training split)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-4 for LoRA, 1e-5 for full)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-split", type=float, default=0.1, help="share of the images held out and scored at the end")
    p.add_argument("--resume", action="store_true", help="carry on from OUT/checkpoint")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae", type=Path, help="segment: the VQ-VAE .npz whose encoder writes the <seg> codes")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.set_defaults(handler=_finetune)


def _finetune(args: argparse.Namespace, rest: list[str]) -> int:
    from training.finetune import FinetuneSettings, finetune, serve_command

    settings = FinetuneSettings(
        model=args.model,
        data=args.data,
        images=args.images,
        task=args.task,
        out=args.out,
        method=args.method,
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_split=args.eval_split,
        resume=args.resume,
        lora_rank=args.lora_rank,
        save_every=args.save_every,
        seed=args.seed,
        vae=args.vae,
        device=args.device,
    )
    result = finetune(settings)
    print(f"Fine-tuned {result.steps} steps on {result.train_examples} examples in {result.minutes:.1f} min.")
    print(f"Held-out {result.metric} ({result.eval_examples} examples): {result.score_text}")
    print(f"Serve it: {serve_command(settings)}")
    return 0
