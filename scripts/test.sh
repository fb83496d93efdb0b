#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run every test.
# Arguments go to pytest (e.g. `scripts/test.sh -k parsing`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh cpu,demo,mcp,chat,agents,train,dev
if ! command -v chromium >/dev/null 2>&1; then
    # The browser tests drive Debian's chromium with Playwright (its own browser download cannot work offline).
    echo "test: installing Debian's chromium for the browser tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
bin=${PALIGEMMA_VENV:-.venv}/bin
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy"
exec "$bin/python" -m pytest "$@"
