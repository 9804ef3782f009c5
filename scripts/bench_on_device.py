#!/usr/bin/env python3
"""Benchmark an edgesdk bundle on the device itself.

Needs only edgesdk.runtime (copy the `edgesdk/` folder next to this script, or pip install edgesdk without extras),
numpy, tokenizers and the bundle's runtime (openvino, onnxruntime or ai-edge-litert).

    python scripts/bench_on_device.py BUNDLE [--vs OTHER_BUNDLE] [--threads 1] [--seq 128] [--json out.json]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesdk.runtime.bench import BenchConfig, bench, report, table, write_json  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--vs", action="append", default=[], help="another bundle, run interleaved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; runs until both limits are reached")
    parser.add_argument("--json", help="write the results (schema edgesdk.bench/1) here")
    args = parser.parse_args()
    config = BenchConfig(args.threads, args.batch, args.seq, args.warmup, args.iterations, args.duration)
    results = bench([args.bundle, *args.vs], config)
    print(table(results))
    if args.json:
        write_json(args.json, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
