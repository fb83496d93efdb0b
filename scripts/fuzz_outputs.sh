#!/usr/bin/env bash
# A long fuzz run of the output parsers, the mask decoder and the pasting (20,000 examples
# per property instead of the test suite's 200), with Hypothesis' statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPOTHESIS_PROFILE=fuzz exec "${PALIGEMMA_VENV:-.venv}/bin/python" -m pytest tests/tools/test_fuzz_outputs.py \
    -p no:cacheprovider -q --hypothesis-show-statistics "$@"
