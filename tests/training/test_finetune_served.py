"""From a COCO file to a served LoRA adapter answering `locate_objects`, on CPU with a real vLLM server.

A few steps of `paligemma finetune --lora` on the tiny trained model (seconds), then
`paligemma serve --model tiny --lora star=OUT`, then the tools pick the adapter by model name.
Whether a few steps teach stars is the benchmark's business (benchmarks/finetune_star.py):
here the claims are the path, the names and typed answers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

import tools
from server import serve
from server.lora import read_adapters
from server.model_source import TINY_NAME
from server.process import free_port
from server.vllm_command import ServeOptions
from tests.conftest import START_TIMEOUT_S
from training import star_scenes

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class LoraServer:
    base_url: str
    base_model: str
    adapter: str
    scenes: Path


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoraServer]:
    work = tmp_path_factory.mktemp("finetune")
    coco = star_scenes.write_coco(work / "data", 8, seed=11, max_side=200)
    out = work / "star"
    finetuned = subprocess.run(  # the command a user runs (the first of the README's three)
        [sys.executable, "-m", "clients.cli", "finetune", "--model", TINY_NAME, "--data", str(coco), "--images",
         str(coco.parent / "images"), "--task", "detect", "--out", str(out), "--lora", "--max-steps", "3",
         "--batch-size", "4", "--eval-split", "0.25"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert finetuned.returncode == 0, finetuned.stderr
    assert "AP50" in finetuned.stdout
    adapters = read_adapters([f"star={out}"])
    the_plan = serve.plan(ServeOptions(model=TINY_NAME, port=free_port(), loras=adapters), device="cpu")
    log_path = work / "vllm-lora.log"
    with serve.running(the_plan, echo=False, log_path=log_path, timeout_s=START_TIMEOUT_S):
        yield LoraServer(the_plan.command.base_url, the_plan.command.served_model_name, "star", coco.parent / "images")


def test_the_adapter_is_served_beside_the_base_model(lora_server: LoraServer) -> None:
    listed = httpx2.get(lora_server.base_url + "/models", timeout=30).json()["data"]
    assert {m["id"] for m in listed} == {lora_server.base_model, lora_server.adapter}


def test_locate_objects_through_the_adapter(lora_server: LoraServer) -> None:
    image = sorted(lora_server.scenes.glob("*.png"))[0]
    with tools.PaliGemmaClient(base_url=lora_server.base_url, model=lora_server.adapter, timeout_s=600) as client:
        found = tools.locate_objects(image, ["star"], client=client)
    assert found.model == lora_server.adapter and found.prompt == "detect star"
    assert all(o.label == "star" for o in found.objects)  # whatever it found, typed and in the asked names


def test_the_environment_picks_the_adapter(lora_server: LoraServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALIGEMMA_MODEL", lora_server.adapter)
    image = sorted(lora_server.scenes.glob("*.png"))[1]
    with tools.PaliGemmaClient(base_url=lora_server.base_url, timeout_s=600) as client:
        assert tools.locate_objects(image, "star", client=client).model == lora_server.adapter
