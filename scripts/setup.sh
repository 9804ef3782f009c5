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
# The tvm-arm64 target links its aarch64 library with the cross gcc: install it when missing and we may (it is
# used only where the tvm extra is installed, in an environment of its own: see pyproject.toml).
if .venv/bin/python -c "import tvm" >/dev/null 2>&1 && ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null \
      || echo "note: could not install gcc-aarch64-linux-gnu; --target tvm-arm64 will fail to link" >&2
  else
    echo "note: aarch64-linux-gnu-gcc is missing (needed by --target tvm-arm64): apt-get install gcc-aarch64-linux-gnu" >&2
  fi
fi
# examples/vision_mobile trains on Fashion-MNIST from Debian's dataset-fashion-mnist (its test skips without it).
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "note: could not install dataset-fashion-mnist; examples/vision_mobile needs --data DIR" >&2
  else
    echo "note: Fashion-MNIST is missing (examples/vision_mobile): apt-get install dataset-fashion-mnist" >&2
  fi
fi
