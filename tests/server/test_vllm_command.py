"""The vLLM command `serve` builds for each model source and machine (pure, no server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import pytest

from server import serve
from server.engine_packing import ENGINES_ENV, PACKING_MIDDLEWARE
from server.errors import ModelSourceError, ServeError
from server.hardware import Hardware
from server.model_source import ModelSource, resolve
from server.presets import PRESETS
from server.vllm_command import ServeOptions, VllmCommand, build_command, chat_template_path, cpu_binding
from server.vllm_plugin import MIDDLEWARE

CPU = Hardware("cpu", (), (0, 1), 24.0)
ONE_L4 = Hardware("cuda", (24.0,), (0, 1, 2, 3), 64.0)
FOUR_A100 = Hardware("cuda", (80.0,) * 4, tuple(range(32)), 512.0)


def flag(command: VllmCommand, name: str) -> str | None:
    argv = list(command.argv)
    return argv[argv.index(name) + 1] if name in argv else None


def test_cpu_command_for_a_local_checkpoint(tiny_model_dir: Path) -> None:
    command = build_command(ServeOptions(model=str(tiny_model_dir)), resolve(str(tiny_model_dir)), CPU)
    assert command.argv[:3] == (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    assert flag(command, "--model") == str(tiny_model_dir.resolve())
    assert flag(command, "--served-model-name") == "tiny-paligemma2"
    assert flag(command, "--dtype") == "float32"
    assert flag(command, "--max-model-len") == "1024"  # 256 image tokens + 768, from the config
    assert flag(command, "--chat-template") == str(chat_template_path())
    assert flag(command, "--chat-template-content-format") == "openai"
    assert json.loads(flag(command, "--limit-mm-per-prompt") or "") == {"image": 1}
    assert "--enforce-eager" not in command.argv  # compiled unless told otherwise
    assert command.env == {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PALIGEMMA_ATTENTION": "prefix",  # PaliGemma's own mask by default (server/vllm_plugin.py)
        "VLLM_USE_V2_MODEL_RUNNER": "0",
    }
    assert command.base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("preset", "hardware", "tensor_parallel", "dtype"),
    [
        pytest.param("3b-mix-448", ONE_L4, None, "bfloat16", id="3b-one-24GiB-gpu"),
        pytest.param("10b-mix-448", FOUR_A100, None, "bfloat16", id="10b-fits-one-80GiB-gpu"),
        pytest.param("28b-mix-448", Hardware("cuda", (24.0,) * 4), "4", "bfloat16", id="28b-needs-4x24GiB"),
        pytest.param("3b-mix-224", CPU, None, "float32", id="3b-on-cpu-float32-fits-24GiB"),
        pytest.param("10b-mix-224", CPU, None, "bfloat16", id="10b-on-cpu-float32-does-not-fit"),
    ],
)
def test_presets_get_the_settings_that_fit(
    preset: str, hardware: Hardware, tensor_parallel: str | None, dtype: str
) -> None:
    command = build_command(ServeOptions(model=preset), resolve(preset), hardware)
    assert flag(command, "--model") == PRESETS[preset].hub_id
    assert flag(command, "--tensor-parallel-size") == tensor_parallel
    assert flag(command, "--dtype") == dtype
    assert flag(command, "--max-model-len") == str(PRESETS[preset].max_model_len)
    assert "--enforce-eager" not in command.argv  # compiled on every device
    if hardware.device == "cuda":
        assert command.argv[:2] == ("vllm", "serve")
        assert command.env == {"PALIGEMMA_ATTENTION": "prefix", "VLLM_USE_V2_MODEL_RUNNER": "0"}
    else:
        assert command.env["VLLM_CPU_KVCACHE_SPACE"] == "4"


@pytest.mark.parametrize("eager", [False, True])
def test_cpu_compiles_unless_told_eager(tiny_model_dir: Path, eager: bool) -> None:
    options = ServeOptions(model=str(tiny_model_dir), eager=eager)
    command = build_command(options, resolve(str(tiny_model_dir)), CPU)
    assert ("--enforce-eager" in command.argv) is eager


def test_a_preset_too_large_for_the_gpus_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ServeError, match=r"needs about 66 GiB.*only 1 GPU"):
        build_command(ServeOptions(model="28b-mix-448"), resolve("28b-mix-448"), ONE_L4)


def test_parallel_sizes_backend_and_passthrough() -> None:
    options = ServeOptions(
        model="28b-mix-448",
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        data_parallel_size=1,
        distributed_executor_backend="ray",
        vllm_args=("--max-num-seqs", "64"),
    )
    command = build_command(options, resolve("28b-mix-448"), Hardware("cuda", (24.0,) * 8))
    assert flag(command, "--tensor-parallel-size") == "4"
    assert flag(command, "--pipeline-parallel-size") == "2"
    assert flag(command, "--data-parallel-size") is None
    assert flag(command, "--distributed-executor-backend") == "ray"
    assert command.argv[-2:] == ("--max-num-seqs", "64")


@pytest.mark.parametrize(
    ("cpus", "ranks", "expected"),
    [
        pytest.param((0, 1), 2, "0|1", id="two-cores-two-workers"),
        pytest.param(tuple(range(8)), 2, "0,1,2,3|4,5,6,7", id="eight-cores-two-workers"),
        pytest.param((2, 3, 6, 7), 4, "2|3|6|7", id="affinity-gaps"),
    ],
)
def test_cpu_binding_gives_each_worker_its_own_cores(cpus: tuple[int, ...], ranks: int, expected: str) -> None:
    assert cpu_binding(cpus, ranks) == expected


def test_cpu_parallel_sets_thread_binding_and_refuses_too_many_workers() -> None:
    source = ModelSource("x/y", "x/y", False)
    command = build_command(ServeOptions(model="x/y", data_parallel_size=2), source, CPU)
    assert command.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    with pytest.raises(ServeError, match="need at least 4 CPUs"):
        build_command(ServeOptions(model="x/y", tensor_parallel_size=4), source, CPU)


@pytest.mark.parametrize(
    ("hardware", "data_parallel", "packed"),
    [
        pytest.param(CPU, 2, True, id="cpu-two-engines"),
        pytest.param(CPU, 1, False, id="cpu-one-engine"),
        pytest.param(Hardware("cuda", (24.0,) * 2), 2, False, id="gpu-two-engines"),
    ],
)
def test_cpu_engines_are_filled_one_at_a_time(hardware: Hardware, data_parallel: int, packed: bool) -> None:
    source = ModelSource("x/y", "x/y", False)
    command = build_command(ServeOptions(model="x/y", data_parallel_size=data_parallel), source, hardware)
    middlewares = [command.argv[i + 1] for i, arg in enumerate(command.argv) if arg == "--middleware"]
    assert (PACKING_MIDDLEWARE in middlewares) is packed
    assert command.env.get(ENGINES_ENV) == (str(data_parallel) if packed else None)


def test_api_key_goes_to_the_environment_not_the_command_line() -> None:
    command = build_command(ServeOptions(model="3b-mix-224", api_key="s3cret"), resolve("3b-mix-224"), ONE_L4)
    assert "s3cret" not in " ".join(command.argv)
    assert command.env["VLLM_API_KEY"] == "s3cret"


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8000/v1"), ("::1", "http://[::1]:8000/v1"), ("10.1.2.3", "http://10.1.2.3:8000/v1")],
)
def test_base_url_for_listen_addresses(host: str, url: str) -> None:
    assert VllmCommand(("vllm",), host=host, port=8000).base_url == url


def test_hub_ids_and_preset_hub_ids_resolve() -> None:
    assert resolve("google/paligemma2-10b-mix-224").preset == PRESETS["10b-mix-224"]
    custom = resolve("someone/paligemma2-finetune")
    assert (custom.location, custom.preset, custom.is_local) == ("someone/paligemma2-finetune", None, False)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param("no-such-preset", r"a preset \(", id="unknown-name"),
        pytest.param("./missing/dir", r"a preset \(", id="missing-relative-path"),
    ],
)
def test_unresolvable_models(model: str, message: str) -> None:
    with pytest.raises(ModelSourceError, match=message):
        resolve(model)


def test_local_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"no config\.json"):
        resolve(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelSourceError, match="not PaliGemma"):
        resolve(str(tmp_path))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ModelSourceError, match="cannot be read as JSON"):
        resolve(str(tmp_path))


PREFIX_FLAGS = ("--no-enable-chunked-prefill", "--disable-hybrid-kv-cache-manager")


@pytest.mark.parametrize(
    ("attention", "hardware", "flags", "env"),
    [
        pytest.param(
            "prefix",
            CPU,
            PREFIX_FLAGS,
            {"PALIGEMMA_ATTENTION": "prefix", "VLLM_USE_V2_MODEL_RUNNER": "0"},
            id="cpu-prefix",
        ),
        pytest.param(
            "prefix",
            ONE_L4,
            (*PREFIX_FLAGS, "--attention-backend", "TRITON_ATTN"),
            {"PALIGEMMA_ATTENTION": "prefix", "VLLM_USE_V2_MODEL_RUNNER": "0"},  # V2 would leave it causal
            id="gpu-prefix-uses-the-triton-backend-and-the-v1-runner",
        ),
        pytest.param("causal", CPU, (), {"PALIGEMMA_ATTENTION": "causal"}, id="cpu-causal-is-plain-vllm"),
        pytest.param("causal", ONE_L4, (), {"PALIGEMMA_ATTENTION": "causal"}, id="gpu-causal-is-plain-vllm"),
    ],
)
def test_attention_modes(
    attention: Literal["prefix", "causal"], hardware: Hardware, flags: tuple[str, ...], env: dict[str, str]
) -> None:
    command = build_command(ServeOptions(model="3b-pt-896", attention=attention), resolve("3b-pt-896"), hardware)
    argv = list(command.argv)
    start = argv.index("--middleware")
    assert argv[start + 1] == MIDDLEWARE  # the x-paligemma-attention header, in either mode
    end = argv.index("--enforce-eager") if "--enforce-eager" in argv else len(argv)
    assert tuple(argv[start + 2 : end]) == flags
    assert {k: v for k, v in command.env.items() if k in ("PALIGEMMA_ATTENTION", "VLLM_USE_V2_MODEL_RUNNER")} == env
    assert command.attention == attention


@pytest.mark.parametrize(
    ("text", "cached"),
    [
        pytest.param({"num_hidden_layers": 1, "sliding_window": 100}, False, id="one-layer-windowed-by-default"),
        pytest.param({"layer_types": ["sliding_attention"] * 3, "sliding_window": 100}, False, id="all-windowed"),
        pytest.param({"num_hidden_layers": 2, "sliding_window": 100}, True, id="windowed-and-full"),
        pytest.param({"num_hidden_layers": 1, "sliding_window": 4096}, True, id="window-past-the-longest-prompt"),
        pytest.param({"num_hidden_layers": 1}, True, id="no-window"),
    ],
)
def test_prefix_caching_is_off_where_every_layer_is_windowed_shorter_than_a_prompt(
    tmp_path: Path, text: dict[str, object], cached: bool
) -> None:
    """vLLM keeps whole blocks for windowed layers only beside full ones: with every layer windowed,
    a cache hit gave the two-way prefix freed blocks (first-token log-probabilities 0.56 off)."""
    config = {"model_type": "paligemma", "text_config": text, "vision_config": {"image_size": 224, "patch_size": 14}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    for attention in ("prefix", "causal"):
        options = ServeOptions(model=str(tmp_path), attention=attention)
        argv = build_command(options, resolve(str(tmp_path)), CPU).argv
        assert ("--no-enable-prefix-caching" not in argv) is (cached or attention == "causal")


def test_the_attention_mode_is_not_overridden_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other variables a user exported win over our defaults; `--attention` is an explicit option."""
    monkeypatch.setenv("PALIGEMMA_ATTENTION", "causal")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver")
    the_plan = serve.plan(ServeOptions(model="3b-mix-224"), device="cpu")
    assert the_plan.command.env["PALIGEMMA_ATTENTION"] == "prefix"
    assert "VLLM_CPU_KVCACHE_SPACE" not in the_plan.command.env
    assert (
        the_plan.command.env["VLLM_PLUGINS"] == "lora_filesystem_resolver,paligemma_prefix_lm"
    )  # an allowlist keeps ours
    assert "PALIGEMMA_ATTENTION=prefix" in serve.dry_run_text(the_plan)


@pytest.mark.parametrize(
    ("attention", "says"),
    [("prefix", "Attention: prefix, PaliGemma's own"), ("causal", "Attention: causal, vLLM's default")],
)
def test_the_startup_banner_names_the_attention(attention: Literal["prefix", "causal"], says: str) -> None:
    command = build_command(ServeOptions(model="3b-mix-224", attention=attention), resolve("3b-mix-224"), CPU)
    banner = serve.usage_banner(command, "cpu")
    assert says in banner and "x-paligemma-attention" in banner


@pytest.mark.parametrize("api_key", [None, "secret"])
def test_the_banners_curl_and_sdk_examples_work_as_printed(tmp_path: Path, api_key: str | None) -> None:
    """Pasted into a shell and into Python, the banner's two examples send the photo and the key."""
    import base64
    import subprocess
    import sys

    from tests.tools.fake_endpoint import Behaviour, fake_endpoint

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    behaviour = Behaviour()
    with fake_endpoint(behaviour) as base_url:
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        command = build_command(ServeOptions(model="tiny", port=port, api_key=api_key), resolve("tiny"), CPU)
        banner = serve.usage_banner(command, "cpu").splitlines()
        start = next(i for i, line in enumerate(banner) if line.startswith("  curl"))
        curl = "\n".join(line[2:] for line in banner[start : start + 2])
        sdk_start = banner.index("openai SDK:") + 1
        sdk = "\n".join(line[2:] for line in banner[sdk_start : sdk_start + 7])
        env = {"PATH": "/usr/bin:/bin", "PALIGEMMA_API_KEY": api_key or ""}
        subprocess.run(["bash", "-c", curl], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
        subprocess.run([sys.executable, "-c", sdk], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
    encoded = base64.b64encode(photo.read_bytes()).decode()
    for body in behaviour.bodies:
        sent = json.loads(body)
        assert sent["temperature"] == 0
        assert sent["messages"][0]["content"][0]["image_url"]["url"] == "data:image/jpeg;base64," + encoded
    assert len(behaviour.bodies) == 2
    assert behaviour.authorizations == (["Bearer secret"] * 2 if api_key else ["", "Bearer EMPTY"])
