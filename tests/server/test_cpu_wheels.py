"""The CPU install repair: applied only where an import fails, idempotent, valid Python."""

from __future__ import annotations

from pathlib import Path

from server import cpu_wheels

ORIGINAL = """import torch
import torchvision.extension


@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return dets


@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    return dets
"""


def test_guard_makes_both_registrations_conditional_once(tmp_path: Path) -> None:
    meta = tmp_path / "_meta_registrations.py"
    meta.write_text(ORIGINAL)
    assert cpu_wheels.guard_torchvision_fake_ops(meta) is True
    patched = meta.read_text()
    compile(patched, str(meta), "exec")
    assert patched.count("if torchvision.extension._has_ops() else (lambda fn: fn)") == 2
    assert cpu_wheels.guard_torchvision_fake_ops(meta) is False  # idempotent
    assert meta.read_text() == patched


def test_import_error_reports_the_last_line() -> None:
    assert cpu_wheels.import_error("json") is None
    error = cpu_wheels.import_error("no_such_module_here")
    assert error is not None and "No module named 'no_such_module_here'" in error


def test_an_installed_environment_needs_no_further_repair() -> None:
    """This test environment was set up by scripts/setup.sh: a second run changes nothing."""
    assert cpu_wheels.repair() == []
    assert cpu_wheels.import_error("torchvision.transforms.v2") is None
