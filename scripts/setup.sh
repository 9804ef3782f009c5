#!/usr/bin/env bash
# Create .venv (once) and install edgesdk with every extra and the test tools, pinned by pyproject.toml.
# torch is installed first and pinned (==2.13.0; this machine's pip serves its CPU build), so nothing newer
# with CUDA wheels is pulled in by a later resolver step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.edgesdk-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[all,test]"
  touch "$stamp"
fi
