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

from edgesdk.runtime.bench import add_arguments, run_from_args  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_from_args(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
