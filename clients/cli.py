"""The `paligemma` command: serve PaliGemma 2 with vLLM, build the tiny model, run the demo.

The batch verbs and their options come from the task registry (tools/tasks.py). Each
subcommand imports the heavy parts it needs (vLLM, torch, Gradio, MCP) when it runs, so a
tools-only install never imports torch or vLLM.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from clients.finetune_cli import add_finetune
from tools import TASKS, LocatedObjects, PaliGemmaError, Task

if TYPE_CHECKING:
    from training.train_tiny import TrainSettings

Handler = Callable[[argparse.Namespace, list[str]], int]


def _gpus(text: str) -> tuple[float, ...]:
    """Parse `COUNTxGIB` (e.g. `4x80`) into one GiB entry per GPU."""
    count, _, gib = text.lower().partition("x")
    try:
        n, size = int(count), float(gib)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected COUNTxGIB such as 4x80, got {text!r}") from e
    if n < 1 or size <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive count and size, got {text!r}")
    return (size,) * n


def _whole(text: str, low: int, high: int, expected: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and low <= int(digits) <= high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return int(digits)


def _count(text: str) -> int:
    """Parse a count of steps, stages or passes: a whole number >= 0."""
    return _whole(text, 0, sys.maxsize, "a whole number >= 0")


def _port(text: str) -> int:
    """A TCP port to listen on: 1-65535."""
    return _whole(text, 1, 65535, "a port from 1 to 65535")


def _positive(text: str) -> int:
    """A whole number >= 1 (sizes, lengths, GiB)."""
    return _whole(text, 1, sys.maxsize, "a whole number >= 1")


def _positive_number(text: str) -> float:
    """A positive, finite number (seconds, megabytes)."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from e
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _name(text: str) -> str:
    """A name that says something (a model name, an API key): not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty string")
    return text


def _json_object(text: str) -> dict[str, object]:
    """A JSON object of extra request fields."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"top_k\": 1}}': {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"top_k\": 1}}', got {text!r}")
    return value


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Where the PaliGemma endpoint is, for the commands that call one (arguments first, then the environment)."""
    parser.add_argument("--base-url", help="PaliGemma endpoint (env PALIGEMMA_BASE_URL)")
    parser.add_argument("--model", help="model name (env PALIGEMMA_MODEL; default: ask the endpoint)")
    parser.add_argument("--api-key", help="key for the endpoint (env PALIGEMMA_API_KEY)")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from server.presets import DEFAULT_PRESET

    p = sub.add_parser(
        "serve",
        help="serve PaliGemma 2 behind vLLM's OpenAI-compatible endpoint",
        description="Start vLLM for a PaliGemma 2 checkpoint with the right settings for this machine. "
        "Options after `--` go to vLLM unchanged.",
    )
    p.add_argument(
        "--model", default=DEFAULT_PRESET, help="preset name (see `paligemma presets`), hub id or local folder"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it: see docs/security.md)"
    )
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--served-model-name", type=_name, help="model name clients use (default: hub id or folder name)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", help="vLLM dtype (default: bfloat16 on GPU, float32 on CPU when it fits)")
    p.add_argument("--max-model-len", type=_positive, help="default: image tokens + 768, from the preset or config")
    p.add_argument("--tensor-parallel-size", type=_positive, help="GPUs per model copy (default: what fits the preset)")
    p.add_argument("--pipeline-parallel-size", type=_positive, default=1, help="pipeline stages (e.g. one per node)")
    p.add_argument(
        "--data-parallel-size",
        type=_positive,
        default=1,
        help="model copies inside one vLLM server (on a small CPU machine: more requests/s under many "
        "clients, a second model copy in memory; docs/deploy.md)",
    )
    p.add_argument("--distributed-executor-backend", choices=["mp", "ray"], help="ray for several nodes")
    p.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="skip torch.compile: starts ~18 s sooner on CPU, serves ~15%% slower (default: compile)",
    )
    p.add_argument(
        "--kv-cache-gib", type=_positive, help="CPU only: KV cache size in whole GiB (default 4, tiny model 1)"
    )
    p.add_argument(
        "--attention",
        choices=["prefix", "causal"],
        default="prefix",
        help="prefix: PaliGemma's own mask, image and prompt two-way (default); causal: vLLM's plain one",
    )
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also serve the LoRA adapter in DIR as model NAME (repeatable; `paligemma finetune` writes them)",
    )
    p.add_argument(
        "--api-key",
        type=_name,
        default=os.environ.get("PALIGEMMA_API_KEY") or None,
        help="require this key (env PALIGEMMA_API_KEY)",
    )
    p.add_argument("--gpus", type=_gpus, help="with --dry-run: plan for other GPUs, COUNTxGIB such as 4x80")
    p.add_argument("--dry-run", action="store_true", help="print the exact vLLM command and exit")
    p.add_argument("--quiet", action="store_true", help="keep vLLM's own log off the terminal")
    p.add_argument("--log-file", type=Path, help="also write vLLM's log here")
    p.add_argument("--timeout", type=_positive_number, default=900.0, help="seconds to wait for a healthy server")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, vllm_args: list[str]) -> int:
    from server import serve
    from server.lora import read_adapters
    from server.vllm_command import ServeOptions

    if args.gpus is not None and not args.dry_run:
        raise SystemExit("paligemma serve: --gpus describes other hardware and only goes with --dry-run")
    options = ServeOptions(
        model=args.model,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        data_parallel_size=args.data_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend,
        kv_cache_gib=args.kv_cache_gib,
        eager=args.eager,
        api_key=args.api_key,
        attention=args.attention,
        loras=read_adapters(args.lora),
        vllm_args=tuple(vllm_args),
    )
    the_plan = serve.plan(options, device=args.device, gpus=args.gpus)
    if args.dry_run:
        print(serve.dry_run_text(the_plan))
        return 0
    return serve.serve_forever(the_plan, quiet=args.quiet, timeout_s=args.timeout, log_path=args.log_file)


def _add_presets(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("presets", help="list the checkpoint presets and the GPUs they need")
    p.set_defaults(handler=_presets)


def _presets(args: argparse.Namespace, rest: list[str]) -> int:
    from server.presets import sizing_table

    print(sizing_table())
    return 0


def _add_make_tiny_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "make-tiny-model",
        help="build a tiny random-weight PaliGemma 2 (offline; its answers are random nonsense)",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_make_tiny_model)


def _make_tiny_model(args: argparse.Namespace, rest: list[str]) -> int:
    from server.tiny_model import build_tiny_model

    path = build_tiny_model(args.directory, seed=args.seed)
    print(f"Built a tiny random-weight PaliGemma 2 in {path} (its answers are random nonsense).")
    return 0


def _add_train_tiny(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train-tiny",
        help="train the tiny VQ-VAE and the tiny PaliGemma 2 on the synthetic domain (about 657 minutes on 2 cores)",
        description=(
            "Reproduces the shipped tiny model from its seed: "
            "`paligemma train-tiny --out server/checkpoints/paligemma2-tiny-shapes "
            "--vae-out tools/data/tiny-shapes-vae.npz`. Serve the result with `paligemma serve --model DIR` "
            "(its masks decode with PALIGEMMA_VAE_PATH=the VAE file)."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("paligemma2-tiny-shapes"), help="checkpoint folder to write")
    p.add_argument("--vae-out", type=Path, help="VQ-VAE .npz to write (default: OUT/vae.npz)")
    p.add_argument(
        "--reuse-vae", action="store_true", help="use the VQ-VAE already at --vae-out instead of training it"
    )
    p.add_argument("--seed", type=int, default=0)
    from training.train_tiny import TRAINED_ARCHITECTURE, TrainSettings

    defaults = TrainSettings()
    p.add_argument("--steps", type=_count, help=f"steps of the main stage (default {defaults.steps})")
    p.add_argument(
        "--binding-steps",
        type=_count,
        help=f"steps of the binding stage after it (default {defaults.binding_steps}; 0: no binding stages)",
    )
    p.add_argument(
        "--last-binding-steps",
        type=_count,
        help=(
            "steps of the last binding stage, mostly scenes of several shapes"
            f" (default {defaults.last_binding_steps}; 0: none)"
        ),
    )
    p.add_argument(
        "--binding-stage-only",
        action="store_true",
        help="run only the binding stages, continuing the main stage's checkpoint already in --out",
    )
    p.add_argument(
        "--letter-steps",
        type=_count,
        help=f"steps of the vision tower's letter stage (default {defaults.letter_steps}; 0: none)",
    )
    p.add_argument(
        "--first-letter-steps",
        type=_count,
        help=(
            "steps of a letter stage before the main stage, on the fresh vision tower"
            f" (default {defaults.first_letter_steps}; 0: none)"
        ),
    )
    p.add_argument(
        "--reading-steps", type=_count, help=f"steps of the reading stage (default {defaults.reading_steps}; 0: none)"
    )
    p.add_argument(
        "--settling-rounds",
        type=_count,
        help=f"settling stages after the first reading stage (default {defaults.settling_rounds}; 0: none)",
    )
    p.add_argument(
        "--rereading-passes",
        type=_count,
        help=(
            "reading passes after the first, each a reading and a settling stage"
            f" (default {defaults.rereading_passes}; 0: none)"
        ),
    )
    p.add_argument(
        "--raised-passes",
        type=_count,
        help=(
            f"reading passes after raising the input resolution from {defaults.first_image_size_px} px to"
            f" {defaults.raised_image_size_px} px (default {defaults.raised_passes}; 0: none)"
        ),
    )
    p.add_argument(
        "--last-settling-rounds",
        type=_count,
        help=f"settling stages after the raised passes (default {defaults.last_settling_rounds}; 0: none)",
    )
    p.add_argument(
        "--final-passes",
        type=_count,
        help=(
            f"reading passes after raising the input resolution once more, to {TRAINED_ARCHITECTURE.image_size_px} px"
            f" (default {defaults.final_passes}; 0: none)"
        ),
    )
    p.add_argument(
        "--final-settling-rounds",
        type=_count,
        help=f"settling stages after the final passes (default {defaults.final_settling_rounds}; 0: none)",
    )
    p.add_argument(
        "--speaking-rounds",
        type=_count,
        help=(
            "speaking stages at the end, half their batches captions, descriptions and questions, each"
            f" followed by a settling stage (default {defaults.speaking_rounds}; 0: none)"
        ),
    )
    p.add_argument(
        "--speaking-steps",
        type=_count,
        help=f"steps of each speaking stage (default {defaults.speaking_steps})",
    )
    p.add_argument(
        "--deepened-text-layers",
        type=_count,
        help=(
            "text layers added at the end, followed by a reading, a speaking and a settling stage"
            f" (default {defaults.deepened_text_layers}; 0: none)"
        ),
    )
    p.add_argument(
        "--deepened-steps",
        type=_count,
        help=f"steps of each stage after adding the text layers (default {defaults.deepened_steps})",
    )
    p.add_argument(
        "--common-word-steps",
        type=_count,
        help=(
            "steps of the last reading stage, half its words common English ones"
            f" (default {defaults.common_word_steps}; 0: none)"
        ),
    )
    p.add_argument(
        "--common-word-settling-steps",
        type=_count,
        help=(
            "steps of each settling stage after it, as many of its words common English ones"
            f" (default {defaults.common_word_settling_steps}; 0: none)"
        ),
    )
    p.add_argument(
        "--common-word-settling-rounds",
        type=_count,
        help=f"settling stages after the common words' stage (default {defaults.common_word_settling_rounds}; 0: none)",
    )
    p.add_argument(
        "--cooling-steps",
        type=_count,
        help=(
            "steps of each cooling stage, the last ones: settling stages on common words at a third of the"
            f" learning rate, half their batches `ocr` (default {defaults.cooling_steps}; 0: none)"
        ),
    )
    p.add_argument(
        "--cooling-rounds",
        type=_count,
        help=f"cooling stages at the end (default {defaults.cooling_rounds}; 0: none)",
    )
    p.add_argument(
        "--reading-stage-only",
        action="store_true",
        help=(
            "run only the reading stages (and the speaking rounds after them), continuing the binding"
            " stages' checkpoint already in --out"
        ),
    )
    p.set_defaults(handler=_train_tiny)


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """train-tiny's settings: each of its options named as a TrainSettings field (`--seed`,
    `--steps`, `--settling-rounds`, ...) sets that field when given; the rest keep their defaults."""
    import dataclasses

    from training.train_tiny import TrainSettings

    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{name: value for name, value in given.items() if value is not None})


def _train_tiny(args: argparse.Namespace, rest: list[str]) -> int:
    from training.train_tiny import train
    from training.vae import train_vae

    vae_path: Path = args.vae_out or args.out / "vae.npz"
    settings = train_settings(args)
    continued = _continued_stages(args, settings, vae_path)
    if continued is not None:
        return continued
    if not args.reuse_vae:
        print(f"Training the VQ-VAE into {vae_path} ...", flush=True)
        metrics = train_vae(vae_path, seed=args.seed)
        print(f"VQ-VAE: mask IoU after encode/decode {metrics['mask_iou']:.3f}, {metrics['seconds']:.0f} s", flush=True)
    elif not vae_path.is_file():
        print(f"--reuse-vae: there is no VQ-VAE at {vae_path}; drop --reuse-vae to train one.", file=sys.stderr)
        return 2
    out = train(args.out, vae_path, settings)
    print(f"Trained tiny PaliGemma 2 in {out} (loss curve: {out / 'loss_curve.png'}).")
    return 0


def _continued_stages(args: argparse.Namespace, settings: TrainSettings, vae_path: Path) -> int | None:
    """--binding-stage-only / --reading-stage-only: the exit code, after continuing the checkpoint
    in --out; None when neither is asked for."""
    from training.train_tiny import bind_all, read_words

    if not (args.binding_stage_only or args.reading_stage_only):
        return None
    flag, earlier = (
        ("--binding-stage-only", "the main stage")
        if args.binding_stage_only
        else ("--reading-stage-only", "the binding stages")
    )
    if args.binding_stage_only and settings.binding_steps < 1:
        print("--binding-stage-only needs binding steps: --binding-steps N (N >= 1).", file=sys.stderr)
        return 2
    if not (args.out / "train_log.json").is_file() or not vae_path.is_file():
        print(
            f"{flag} continues {earlier}: {args.out} needs its checkpoint and train_log.json,"
            f" and {vae_path} the VQ-VAE it was trained with.",
            file=sys.stderr,
        )
        return 2
    if args.binding_stage_only:
        out = bind_all(args.out, vae_path, settings)
        if args.reading_stage_only:
            read_words(out, vae_path, settings)
    else:
        out = read_words(args.out, vae_path, settings)
    print(f"Continued stages done in {out} (loss curve: {out / 'loss_curve.png'}).")
    return 0


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="serve the tiny trained model (or --model), run every tool on a generated scene, draw the answers, stop",
    )
    p.add_argument("--model", help="tiny (default: the trained tiny model shipped here), a preset, hub id or folder")
    p.add_argument("--image", type=Path, help="an image file (default: a generated scene of the tiny model's domain)")
    p.add_argument("--out", type=Path, help="where to write the annotated image (default: the user cache)")
    p.add_argument("--port", type=_port, help="default: a free port")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    from clients.demo import run_demo

    return run_demo(model=args.model, image=args.image, port=args.port, out=args.out, device=args.device)


def _add_fix_cpu_install(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fix-cpu-install",
        help="repair torchvision/torchaudio/torchcodec CUDA builds beside a CPU torch (only if broken)",
    )
    p.set_defaults(handler=_fix_cpu_install)


def _fix_cpu_install(args: argparse.Namespace, rest: list[str]) -> int:
    from server.cpu_wheels import main

    return main()


def _add_mcp(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the tools over MCP (stdio for desktop hosts, streamable HTTP for remote ones)",
        description="An MCP server for the PaliGemma tools. The PaliGemma endpoint comes from --base-url or "
        "PALIGEMMA_BASE_URL; local image files are refused unless their folder is allowed.",
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="http only")
    p.add_argument("--port", type=_port, default=8765, help="http only; the endpoint is http://HOST:PORT/mcp")
    _add_endpoint_options(p)
    p.add_argument(
        "--allow-root",
        action="append",
        type=Path,
        default=[Path(p) for p in os.environ.get("PALIGEMMA_ALLOWED_ROOTS", "").split(os.pathsep) if p],
        help="a folder whose image files tools may read (repeatable; env PALIGEMMA_ALLOWED_ROOTS)",
    )
    p.add_argument("--no-urls", action="store_true", help="refuse http(s) image URLs")
    p.add_argument("--max-image-mb", type=_positive_number, default=32.0, help="largest image accepted")
    p.add_argument("--no-annotated-images", action="store_true", help="return JSON only, no drawn PNG")
    p.add_argument("--timeout", type=_positive_number, default=60.0, help="seconds per request to the endpoint")
    p.set_defaults(handler=_mcp)


def _mcp(args: argparse.Namespace, rest: list[str]) -> int:
    from tools.agents import McpSettings, serve_mcp

    settings = McpSettings(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        allowed_roots=tuple(args.allow_root),
        allow_urls=not args.no_urls,
        max_image_bytes=int(args.max_image_mb * 1024 * 1024),
        annotated_images=not args.no_annotated_images,
        timeout_s=args.timeout,
    )
    serve_mcp(settings, args.transport, host=args.host, port=args.port)
    return 0


def _add_option(parser: argparse.ArgumentParser, name: str, info: FieldInfo) -> None:
    """A task option as a flag: its name, type, limits, default and description come from the task's options model."""
    flag, annotation = "--" + name.replace("_", "-"), info.annotation
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    if typing.get_origin(annotation) is list:  # object names: one argument, separated with `;` as in prompts
        hint = f"{info.description} Here one argument, the names separated with ';': 'cat ; dog'."
        parser.add_argument(flag, dest=name, required=required, default=None, help=hint)  # None: the default
    elif annotation is bool:
        action = argparse.BooleanOptionalAction
        parser.add_argument(flag, dest=name, action=action, default=default, help=info.description)
    elif typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        parser.add_argument(flag, dest=name, choices=choices, default=default, help=info.description)
    else:
        convert = _option_value(annotation, info)
        parser.add_argument(flag, dest=name, type=convert, required=required, default=default, help=info.description)


def _option_value(annotation: Any, info: FieldInfo) -> Callable[[str], Any]:
    """The flag's text as the option's type within its limits (`5` for an int option of at most 20)."""
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[(annotation, *info.metadata)] if info.metadata else annotation)

    def value(text: str) -> Any:
        try:
            return adapter.validate_python(text, strict=False)
        except ValidationError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e.errors()[0]['msg']}") from None

    value.__name__ = getattr(annotation, "__name__", "value")  # argparse names it in its error
    return value


def _add_batch(sub: argparse._SubParsersAction[argparse.ArgumentParser], tasks: Sequence[Task[Any, Any]]) -> None:
    for task in tasks:
        if taken := {task.verb, task.name} & set(sub.choices):
            raise ValueError(f"task {task.name!r}: {sorted(taken)} is already a paligemma command; choose another verb")
        p = sub.add_parser(
            task.verb,
            aliases=[task.name] if task.name != task.verb else [],
            help=f"{task.summary}; files, folders (recursive) and globs; resumable JSON Lines",
            description=f"{task.summary.capitalize()} ({task.name}). Results go to a JSON Lines file, one record "
            "per image; re-running with the same output skips the images already done. Exit status 1 if any "
            "image failed.",
        )
        p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
        for name, info in task.options.model_fields.items():
            _add_option(p, name, info)
        if issubclass(task.result, LocatedObjects):
            p.add_argument("--coco", type=Path, help="also write COCO-format JSON here")
            p.add_argument("--annotate-dir", type=Path, help="also save each image with the result drawn here")
        p.add_argument("-o", "--output", type=Path, default=Path(f"paligemma-{task.verb}.jsonl"), help="results file")
        p.add_argument("--concurrency", type=_positive, default=4, help="requests in flight at once")
        _add_endpoint_options(p)
        p.add_argument("--timeout", type=_positive_number, default=120.0, help="seconds per request")
        p.add_argument("--extra-body", type=_json_object, help="extra request fields for vLLM, as a JSON object")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(handler=_batch, task=task)


def _batch(args: argparse.Namespace, rest: list[str]) -> int:
    import tools
    from clients.batch import Job, main

    task: Task[Any, Any] = args.task
    values: dict[str, Any] = {}
    for name, info in task.options.model_fields.items():
        value = getattr(args, name)
        if value is not None:  # None: a list option left out, which takes the task's default
            values[name] = [value] if typing.get_origin(info.annotation) is list else value
    job = Job(task, task.given(**values))
    job.prompt  # noqa: B018  (a PromptError for a bad option, before any image is looked at)
    if args.concurrency < 1:
        raise SystemExit("paligemma: --concurrency must be at least 1")
    with tools.PaliGemmaClient(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        timeout_s=args.timeout,
        max_concurrency=args.concurrency,
        extra_body=args.extra_body,
    ) as client:
        return main(
            job,
            args.paths,
            output=args.output,
            client=client,
            concurrency=args.concurrency,
            coco=getattr(args, "coco", None),
            annotate_dir=getattr(args, "annotate_dir", None),
            progress=not args.no_progress,
        )


def _add_chat(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="a web chat app (Gradio) for any PaliGemma endpoint: upload an image, ask, see boxes and masks",
        description="Serve the chat app in the browser. The PaliGemma endpoint comes from --base-url or "
        "PALIGEMMA_BASE_URL (default: `paligemma serve` on this machine). Needs the `chat` extra (gradio).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=_port, default=7860)
    _add_endpoint_options(p)
    p.add_argument("--timeout", type=_positive_number, default=60.0, help="seconds per request to the endpoint")
    p.set_defaults(handler=_chat)


def _chat(args: argparse.Namespace, rest: list[str]) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:  # the optional `chat` extra
        raise SystemExit("paligemma chat needs Gradio: pip install 'paligemma-tools[chat]'")
    from clients.chat_app import launch
    from tools import PaliGemmaClient

    client = PaliGemmaClient(base_url=args.base_url, model=args.model, api_key=args.api_key, timeout_s=args.timeout)
    launch(client, host=args.host, port=args.port)
    return 0


def build_parser(tasks: Sequence[Task[Any, Any]] = TASKS) -> argparse.ArgumentParser:
    """The command line, with one batch verb per task of `tasks`."""
    parser = argparse.ArgumentParser(prog="paligemma", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_serve,
        _add_presets,
        _add_make_tiny_model,
        _add_train_tiny,
        add_finetune,
        _add_demo,
        _add_mcp,
        _add_chat,
        _add_fix_cpu_install,
        functools.partial(_add_batch, tasks=tasks),  # last: a verb that is another command is named
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `paligemma` console script."""
    from server.errors import ServeError

    args_in = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, passthrough = args_in[:cut], args_in[cut + 1 :]
    args = build_parser().parse_args(args_in)
    handler: Handler = args.handler
    try:
        return handler(args, passthrough)
    except ServeError as e:
        print(f"paligemma {args.command}: {e}", file=sys.stderr)
        return 2
    except PaliGemmaError as e:  # a bad --objects or --lang, an endpoint that cannot be reached
        print(f"paligemma {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
