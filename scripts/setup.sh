#!/usr/bin/env bash
# Create .venv and install paligemma-tools with the extras named in $1 (comma-separated).
# "serve" stands for the serving extra of this machine: gpu where nvidia-smi sees a GPU,
# cpu elsewhere (then the CUDA-only torch add-ons PyPI brings are repaired, only if broken).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PALIGEMMA_VENV:-.venv}
extras=${1:-serve,demo}
if [[ ",$extras," == *,serve,* ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then serving=gpu; else serving=cpu; fi
    extras=${extras//serve/$serving}
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python 3.11 or newer is needed as python3" >&2; exit 1; }
    python3 -m venv "$venv"
fi
echo "setup: installing paligemma-tools[$extras] into $venv (the first time takes a few minutes)" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
if [[ ",$extras," == *,cpu,* ]]; then
    "$venv/bin/python" -m server.cpu_wheels
fi
