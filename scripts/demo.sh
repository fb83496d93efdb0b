#!/usr/bin/env bash
# The main job: set up, build the tiny offline model, serve it with vLLM, run every tool on
# a photo, print the typed results, stop. Arguments go to `paligemma demo` (e.g. --model 3b-mix-448).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh serve,demo
exec "${PALIGEMMA_VENV:-.venv}/bin/paligemma" demo "$@"
