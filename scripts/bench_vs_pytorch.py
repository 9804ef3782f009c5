#!/usr/bin/env python3
"""PyTorch FP32 eager vs edgesdk bundles, interleaved in one process: the baseline every speed-up is quoted against.

    python scripts/bench_vs_pytorch.py dist/all-minilm-l6-v2-intel-int8 [MORE_BUNDLES...] --threads 1 --seq 128

Runs the bundle's source model (manifest model.source, a Hugging Face folder) in PyTorch eager with the same
token feeds, alternating with each bundle's runner, and prints p50s and the ratio bundle / PyTorch.
Needs the export extra (torch, transformers); the on-device script is scripts/bench_on_device.py.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edgesdk.runtime import load  # noqa: E402
from edgesdk.runtime.bench import BenchConfig, feeds_for, run_interleaved, timer  # noqa: E402


def torch_model(source: str, threads: int, dynamic_int8: bool = False):
    """`run(feeds) -> last_hidden_state` (numpy) of the source in PyTorch eager, FP32 or `quantize_dynamic` INT8."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(source).eval()
    if dynamic_int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

    def run(feeds: dict) -> np.ndarray:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()})
        return out.last_hidden_state.numpy()

    return run


def torch_eager(source: str, feeds: dict, threads: int):
    return timer(torch_model(source, threads), feeds)


def interleaved_arguments(doc: str, iterations: int) -> argparse.ArgumentParser:
    """The options every interleaved bundles-vs-PyTorch script takes (this one and bench_peers.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--json", help="write p50s and ratios here")
    return parser


def main() -> int:
    args = interleaved_arguments(__doc__, 60).parse_args()
    config = BenchConfig(threads=args.threads, seq=args.seq, warmup=args.warmup, iterations=args.iterations)
    runners = [load(b, threads=args.threads) for b in args.bundles]
    feeds = [feeds_for(r, 1, args.seq) for r in runners]
    baseline = torch_eager(runners[0].manifest.model.source, feeds[0], args.threads)

    timed = [baseline] + [timer(r.run, f) for r, f in zip(runners, feeds)]
    sinks = [[] for _ in timed]
    run_interleaved(timed, sinks, config)
    p50 = [float(np.percentile(s, 50)) for s in sinks]
    print(f"seq {args.seq}, batch 1, {args.threads} thread(s), {args.iterations} interleaved iterations")
    print(f"{'PyTorch FP32 eager':48} p50 {p50[0]:8.2f} ms")
    result = {"pytorch_fp32_eager_p50_ms": round(p50[0], 3), "bundles": {}}
    for bundle, value in zip(args.bundles, p50[1:]):
        print(f"{Path(bundle).name:48} p50 {value:8.2f} ms   ratio vs PyTorch {value / p50[0]:.3f}")
        result["bundles"][Path(bundle).name] = {"p50_ms": round(value, 3), "ratio_vs_pytorch": round(value / p50[0], 3)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
