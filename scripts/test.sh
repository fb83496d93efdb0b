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
if [ $# -gt 0 ]; then
    exec "$bin/python" -m pytest "$@"
fi
# Every test, in two pytest runs at once (docs/testing.md): the tests with vLLM servers (marker
# `vllm`) leave a core idle while one Python process imports or one request decodes, and the
# tests without a server fill it. The background run starts under job control, in its own
# process group with SIGINT kept (a plain background job ignores it, and tests send it); a lane
# that fails, or runs no test, fails the command.
rest_log=$(mktemp)
set -m
"$bin/python" -m pytest -m "not vllm" -p no:cacheprovider --basetemp="$(mktemp -d)" >"$rest_log" 2>&1 &
rest=$!
set +m
trap 'kill -INT -"$rest" 2>/dev/null || true' INT TERM
echo "test: the tests without a vLLM server run at once in the background; their report follows this one" >&2
served=0
"$bin/python" -m pytest -m vllm || served=$?
others=0
wait "$rest" || others=$?
echo "================ tests without a vLLM server (pytest -m 'not vllm') ================"
cat "$rest_log"
rm -f "$rest_log"
echo "test: vLLM lane exit status $served, other lane $others" >&2
[ "$served" -eq 0 ] && [ "$others" -eq 0 ]
