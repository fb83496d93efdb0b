"""A real PaliGemma 2 mix checkpoint on a GPU: serve it, detect the cat in a real photo.

Runs only where there is an NVIDIA GPU and the gated checkpoint is reachable (hub access with a
token, or already in the cache); elsewhere it is skipped with the reason. It is the check the
tiny random model cannot make: that real weights answer sensibly through our whole path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

import tools
from server import serve
from server.errors import ModelSourceError
from server.model_source import check_available, resolve
from server.process import free_port
from server.vllm_command import ServeOptions

PRESET = os.environ.get("PALIGEMMA_TEST_PRESET", "3b-mix-224")


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


def _checkpoint_reason() -> str | None:
    try:
        check_available(resolve(PRESET))
    except ModelSourceError as e:
        return str(e)
    return None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.hub,
    pytest.mark.skipif(not _gpu_present(), reason="needs an NVIDIA GPU (none visible to nvidia-smi)"),
]


def test_real_checkpoint_finds_the_cat(tmp_path: Path) -> None:
    reason = _checkpoint_reason()
    if reason is not None:
        pytest.skip(f"{PRESET} cannot be loaded here: {reason}")
    photo = Path(str(resources.files("skimage").joinpath("data", "chelsea.png")))  # a cat filling the frame
    the_plan = serve.plan(ServeOptions(model=PRESET, port=free_port()), device="cuda")
    with serve.running(the_plan, echo=False, log_path=tmp_path / "vllm.log", timeout_s=1800):
        with tools.PaliGemmaClient(base_url=the_plan.command.base_url) as client:
            found = tools.locate_objects(photo, "cat", client=client)
            caption = tools.caption_image(photo, client=client)
    assert [d.label for d in found.objects][:1] == ["cat"], found.raw_text
    box = found.objects[0].box
    assert box.width * box.height > 0.4 * found.image_width * found.image_height  # the cat fills most of it
    assert "cat" in caption.caption.lower()
