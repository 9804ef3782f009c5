#!/usr/bin/env bash
# The test suite on a fresh machine: install, then run every test (real runtimes, real MiniLM end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
