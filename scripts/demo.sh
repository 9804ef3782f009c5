#!/usr/bin/env bash
# The main job on a fresh machine: install, then export the bundled all-MiniLM-L6-v2 to the intel (OpenVINO) and
# onnxruntime targets, FP32 and INT8, each verified in its real runtime; prints the summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgesdk export --target intel,onnxruntime --out dist/ "$@"
