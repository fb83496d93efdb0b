"""A tools-only install, as an agent stack would do it: `pip install paligemma-tools` with no
extra, in a fresh virtual environment. It must bring no torch and no vLLM, import in one go,
run the pure parts, and say what to install when asked to serve."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import importlib.util, json, sys
import tools
result = tools.parse_detections(" <loc0199><loc0152><loc1021><loc0744> person", width=400, height=406)
print(json.dumps({
    "heavy": [m for m in ("torch", "vllm", "transformers", "gradio", "mcp") if importlib.util.find_spec(m)],
    "box": [round(v) for v in result.objects[0].box.xyxy],
}))
"""


@pytest.fixture(scope="module")
def light_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("light")
    source = base / "source"  # a copy, so that building the wheel writes nothing into the checkout
    junk = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", "docs")
    shutil.copytree(ROOT, source, ignore=junk)
    home = base / "venv"
    venv.create(home, with_pip=True)
    subprocess.run(
        [home / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
    )
    return home


def test_tools_only_install_has_no_torch_or_vllm(light_env: Path) -> None:
    out = subprocess.run([light_env / "bin" / "python", "-c", PROBE], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report == {"heavy": [], "box": [59, 79, 291, 405]}


def test_serving_without_vllm_says_what_to_install(light_env: Path) -> None:
    result = subprocess.run(
        [light_env / "bin" / "paligemma", "serve", "--model", "3b-mix-224", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "vLLM is not installed" in result.stderr and "paligemma-tools[cpu]" in result.stderr


def test_the_dry_run_needs_no_serving_extra_unless_a_card_names_a_base(light_env: Path, tmp_path: Path) -> None:
    def dry_run(model: str) -> subprocess.CompletedProcess[str]:
        command = [light_env / "bin" / "paligemma", "serve", "--model", model, "--device", "cpu", "--dry-run"]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    tiny = dry_run("tiny")  # its card has no metadata block: nothing to read it with
    assert tiny.returncode == 0 and "--served-model-name paligemma2-tiny-shapes" in tiny.stdout, tiny.stderr
    (tmp_path / "config.json").write_text('{"model_type": "paligemma"}')
    (tmp_path / "README.md").write_text('---\nbase_model: "paligemma2-tiny-shapes"\n---\n')
    fine_tuned = dry_run(str(tmp_path))  # Hugging Face's card reader comes with the serving extra
    assert fine_tuned.returncode == 2 and "huggingface_hub is missing" in fine_tuned.stderr
