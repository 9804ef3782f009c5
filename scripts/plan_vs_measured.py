#!/usr/bin/env python
"""Estimate vs measured peak memory for the default model's four CPU bundles (ONNX Runtime and OpenVINO, FP32 and
INT8) at batch {1, 8, 32} x seq {128, 512}: 24 rows, each measured in its own fresh process, one at a time,
single-threaded. Exports the bundles first unless --dist holds them already.

    python scripts/plan_vs_measured.py --dist dist [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BUNDLES = ("onnxruntime-fp32", "onnxruntime-int8", "intel-fp32", "intel-int8")
BATCHES = (1, 8, 32)
SEQS = (128, 512)
TOLERANCE_PCT = 25.0


def ensure_bundles(dist: Path) -> list[Path]:
    paths = [dist / f"all-minilm-l6-v2-{name}" for name in BUNDLES]
    if not all((p / "manifest.json").is_file() for p in paths):
        from edgesdk.api import ExportOptions, export

        export(ExportOptions(targets=("intel", "onnxruntime"), out=str(dist), progress=False))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", default="dist", help="folder with (or for) the four bundles")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", help="write every row (edgesdk.plan/1 check objects) to this file")
    args = parser.parse_args()
    from edgesdk.plan.planner import CheckOptions, check
    from edgesdk.plan.report import check_dict

    rows, misses = [], 0
    print(f"| bundle | batch | seq | weights+copies MB | activations MB | overhead MB | estimate MB | "
          f"measured MB | error % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in ensure_bundles(Path(args.dist)):
        for batch in BATCHES:
            for seq in SEQS:
                result = check(CheckOptions(str(path), batch, seq, args.runs, 1))
                e, m = result.estimate, result.measured
                misses += abs(result.error_pct) > TOLERANCE_PCT
                rows.append(check_dict(result))
                print(f"| {path.name.removeprefix('all-minilm-l6-v2-')} | {batch} | {seq} | "
                      f"{(e.weights.total + e.runtime_copies) / 2**20:.1f} | {(e.activations + e.inputs) / 2**20:.1f} | "
                      f"{e.overhead / 2**20:.0f} | {e.total / 2**20:.1f} | {m.increase / 2**20:.1f} | "
                      f"{result.error_pct:+.1f} |", flush=True)
    print(f"{len(rows) - misses}/{len(rows)} within ±{TOLERANCE_PCT:.0f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
