"""Turn `paligemma serve` options into the exact vLLM command line and environment.

Pure: it reads nothing but its arguments, so `--dry-run`, the docs and the tests see the
very command `serve` runs.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from server.engine_packing import ENGINES_ENV, PACKING_MIDDLEWARE
from server.errors import ServeError
from server.hardware import Hardware
from server.lora import LoraAdapter, check_adapters_fit, lora_args
from server.model_parent import PARENT_ENV, PARENT_MIDDLEWARE
from server.model_source import ModelSource
from server.vllm_plugin import ATTENTION_ENV, MIDDLEWARE, Attention

CPU_KV_CACHE_GIB_TINY = 1
CPU_KV_CACHE_GIB = 4
Backend = Literal["mp", "ray"]


def chat_template_path() -> Path:
    """The PaliGemma chat template shipped in this package."""
    return Path(str(resources.files("server").joinpath("paligemma_chat_template.jinja")))


@dataclass(frozen=True)
class ServeOptions:
    """What a user asked of `paligemma serve` (None: choose from the model and hardware)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: Backend | None = None
    kv_cache_gib: int | None = None  # vLLM reads VLLM_CPU_KVCACHE_SPACE as whole GiB
    eager: bool = False  # skip torch.compile: starts sooner, serves slower (short jobs and tests)
    api_key: str | None = None
    attention: Attention = "prefix"  # PaliGemma's own mask, or vLLM's plain causal one
    loras: tuple[LoraAdapter, ...] = ()  # `--lora NAME=DIR`: adapters served by name beside the base model
    vllm_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmCommand:
    """A vLLM server command: argv, the environment variables it adds, and where it listens."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    served_model_name: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    attention: Attention = "causal"
    loras: tuple[LoraAdapter, ...] = ()
    parent: str | None = None  # the model a fine-tuned checkpoint is listed with as its parent

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def shell(self) -> str:
        """The command as one copy-pasteable shell line."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.argv)


def _executable(hardware: Hardware) -> list[str]:
    # GPU machines run the `vllm` distribution and its console script. On CPU the module
    # form works for both builds: vllm-cpu ships the same import package under another
    # distribution name, which breaks the `vllm` script's version lookup.
    if hardware.device == "cuda":
        return ["vllm", "serve"]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


def cpu_binding(cpu_ids: tuple[int, ...], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` CPU workers: the CPUs split into equal groups.

    vLLM binds one NUMA node per worker on its own and refuses when there are fewer nodes
    than workers (a 2-core VM has one), so `serve` hands each worker its own cores.
    """
    if len(cpu_ids) < ranks:
        raise ServeError(
            f"{ranks} CPU workers (tensor x pipeline x data parallel) need at least {ranks} CPUs; "
            f"this process may use {len(cpu_ids)}. Lower the parallel sizes."
        )
    per_rank = len(cpu_ids) // ranks
    groups = [cpu_ids[i * per_rank : (i + 1) * per_rank] for i in range(ranks)]
    return "|".join(",".join(map(str, group)) for group in groups)


def _tensor_parallel(options: ServeOptions, source: ModelSource, hardware: Hardware) -> int:
    if options.tensor_parallel_size is not None:
        return options.tensor_parallel_size
    if hardware.device != "cuda" or source.preset is None or not hardware.gpu_memory_gib:
        return 1
    size = source.preset.tensor_parallel_for(min(hardware.gpu_memory_gib))
    per_replica = hardware.gpu_count // max(1, options.pipeline_parallel_size * options.data_parallel_size)
    if size > per_replica:
        raise ServeError(
            f"{source.preset.name} needs about {source.preset.gpu_memory_gib:.0f} GiB of GPU memory: "
            f"{size} GPUs of {min(hardware.gpu_memory_gib):.0f} GiB per replica, but only "
            f"{hardware.gpu_count} GPU(s) are visible. Use a smaller preset, more GPUs "
            "(--tensor-parallel-size / --pipeline-parallel-size across nodes with --distributed-executor-backend ray), "
            "or see docs/deploy.md."
        )
    return size


def _dtype(options: ServeOptions, source: ModelSource, hardware: Hardware) -> str:
    if options.dtype is not None:
        return options.dtype
    if hardware.device == "cuda":
        return "bfloat16"
    # float32 tracks the reference on CPU (bf16 drifts after a few tokens); fall back to
    # bf16 when float32 weights would not leave room for the KV cache and the OS.
    if source.parameters_b is not None and source.parameters_b * 4 + 6 > hardware.memory_gib:
        return "bfloat16"
    return "float32"


def attention_args(
    attention: Attention, hardware: Hardware, *, every_layer_window: int | None = None, max_model_len: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """vLLM options and environment for an attention mode (server/vllm_plugin.py does the work)."""
    argv = ["--middleware", MIDDLEWARE]  # the x-paligemma-attention response header, in both modes
    env: dict[str, str] = {ATTENTION_ENV: attention}
    if attention == "causal":
        return argv, env
    # A prefix split across steps cannot attend two-way exactly, so whole prompts only. Every
    # layer keeps all its KV blocks: a prefix-cache hit on a prompt longer than Gemma 2's sliding
    # window (896 px checkpoints) re-reads the whole prefix, which the hybrid manager would drop.
    argv += ["--no-enable-chunked-prefill", "--disable-hybrid-kv-cache-manager"]
    if every_layer_window is not None and (max_model_len is None or every_layer_window < max_model_len):
        # vLLM keeps full blocks only for models that mix windowed and full layers; with every
        # layer windowed, a prefix-cache hit hands the prefix pass blocks freed outside the window.
        argv.append("--no-enable-prefix-caching")
    if hardware.device == "cuda":
        argv += ["--attention-backend", "TRITON_ATTN"]  # the GPU backend with prefix ranges
    # The runner the plugin reads prompt lengths from; vLLM's V2 runner, its default where Triton
    # is, passes them only to models of its own windowed kind, and PaliGemma would stay causal.
    env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    return argv, env


def build_command(
    options: ServeOptions,
    source: ModelSource,
    hardware: Hardware,
) -> VllmCommand:
    """The vLLM command that serves `source` on `hardware` as `options` ask."""
    served_name = options.served_model_name or source.served_name
    argv = [
        *_executable(hardware),
        "--model",
        source.location,
        "--served-model-name",
        served_name,
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--chat-template",
        str(chat_template_path()),
        "--chat-template-content-format",
        "openai",
        "--limit-mm-per-prompt",
        '{"image": 1}',
        "--dtype",
        _dtype(options, source, hardware),
    ]
    max_model_len = options.max_model_len or source.max_model_len
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    tensor_parallel = _tensor_parallel(options, source, hardware)
    for flag, size in (
        ("--tensor-parallel-size", tensor_parallel),
        ("--pipeline-parallel-size", options.pipeline_parallel_size),
        ("--data-parallel-size", options.data_parallel_size),
    ):
        if size != 1:
            argv += [flag, str(size)]
    if options.distributed_executor_backend is not None:
        argv += ["--distributed-executor-backend", options.distributed_executor_backend]
    attention_argv, env = attention_args(
        options.attention, hardware, every_layer_window=source.every_layer_window, max_model_len=max_model_len
    )
    argv += attention_argv
    # Compiled on every device: on CPU three idle runs of benchmarks.serving put compiled at +8% to
    # +18% requests/s at 16 concurrent and 8-21% lower single-request latency, for a start 10-19 s
    # slower (docs/benchmarks.md). Short jobs (the demo, most of the tests' servers) ask for eager.
    if options.eager:
        argv.append("--enforce-eager")
    if hardware.device == "cpu":
        kv_gib = options.kv_cache_gib or (CPU_KV_CACHE_GIB_TINY if source.is_tiny else CPU_KV_CACHE_GIB)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gib)
        local_ranks = tensor_parallel * options.pipeline_parallel_size * options.data_parallel_size
        if local_ranks > 1 and options.distributed_executor_backend != "ray":
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(hardware.cpu_ids, local_ranks)
        if options.data_parallel_size > 1 and options.distributed_executor_backend != "ray":
            # One engine answers while few requests are in flight; vLLM's round-robin would wake
            # them all, and an idle CPU engine's worker spins on its core (server/engine_packing.py)
            argv += ["--middleware", PACKING_MIDDLEWARE]
            env[ENGINES_ENV] = str(options.data_parallel_size)
    if options.api_key is not None:
        env["VLLM_API_KEY"] = options.api_key  # in the environment, not on a visible command line
    parent = source.parent if source.parent != served_name else None
    if parent is not None:  # listed as the adapters are, so the tools treat it as its base model
        argv += ["--middleware", PARENT_MIDDLEWARE]
        env[PARENT_ENV] = parent
    if Path(source.location).is_dir():  # a hub id's config is not read here
        check_adapters_fit(options.loras, Path(source.location), options.model)
    argv += lora_args(options.loras, served_name)
    argv += options.vllm_args
    return VllmCommand(
        tuple(argv), env, served_name, options.host, options.port, options.attention, options.loras, parent
    )
