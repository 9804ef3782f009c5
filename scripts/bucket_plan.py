#!/usr/bin/env python3
"""Which sequence buckets and batched signatures suit a corpus: a LiteRT text bundle's signatures timed one by one,
a cost model fitted to them, and the corpus replayed through the runner's routing for other layouts.

    python scripts/bucket_plan.py dist/all-minilm-l6-v2-android-int8 --data ../shared/data/stsb/dev.tsv \
        --layout "12,16,20,24,32,48,128;16x12,16x16,16x20,16x24,8x32" --layout "10,12,14,16,20,24,32,128;"

Each signature of the bundle runs on dummy tokens (interleaved, --rounds times, 1 thread by default; p50 kept).
A least-squares model ms = a + b·rows·L + c·rows·L² + d·rows, fitted to those timings, prices shapes the bundle
does not have. The corpus (every unique sentence, tokenized by the bundle's own tokenizer) is then replayed as
`embed(batch_size=--batch)` runs it: texts sorted longest first by tokens, each batch's rows sent to the
smallest bucket holding their tokens, each bucket's rows split by `row_plan` over its batched signatures. Per
layout it prints the predicted model time, padded tokens / real tokens and the signature count (each signature
adds its tensor tables to the file: ~38 kB for MiniLM's dynamic INT8). A --layout is "buckets;BxL,BxL,...".
The prediction covers model calls only (tokenizing and pooling are the same for every layout).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_corpus import read_corpus  # noqa: E402
from edgesdk.runtime import load  # noqa: E402
from edgesdk.runtime.tflite import row_plan  # noqa: E402


def parse_layout(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    buckets, _, batches = text.partition(";")
    try:
        lengths = tuple(sorted({int(b) for b in buckets.split(",") if b.strip()}))
        shapes = tuple((int(s.split("x")[0]), int(s.split("x")[1])) for s in batches.split(",") if s.strip())
    except (ValueError, IndexError):
        raise SystemExit(f"--layout {text!r}: expected 'L,L,...;BxL,...' (e.g. '12,16,128;16x12'), integers only")
    if not lengths or any(n not in lengths for _, n in shapes) or any(b < 2 for b, _ in shapes):
        raise SystemExit(f"--layout {text!r}: batched shapes need batch >= 2 and a length among the buckets")
    return lengths, shapes


def time_signatures(runner, rounds: int) -> dict[tuple[int, int], float]:
    """p50 ms of every (batch, length) signature of the bundle, on dummy tokens, interleaved."""
    session = runner._session
    session._interpreter()
    shapes = [(1, n) for n in runner.static_lengths] + list(runner.static_batches)
    feeds = {}
    for batch, length in shapes:
        tokens = runner.tokenize(["x " * (length - 2)] * batch, pad_to=length)
        feeds[(batch, length)] = {k: v[:, :length] for k, v in tokens.items()}
    samples: dict[tuple[int, int], list[float]] = {s: [] for s in shapes}
    for _ in range(rounds + 1):  # the first round warms up
        for shape in shapes:
            start = time.perf_counter()
            runner.run(feeds[shape])
            samples[shape].append((time.perf_counter() - start) * 1000)
    return {s: float(np.median(v[1:])) for s, v in samples.items()}


def features(batch: int, length: int) -> list[float]:
    return [1.0, batch * length, batch * length * length, batch]


def replay(lengths: np.ndarray, order: np.ndarray, buckets, shapes, cost, batch_size: int) -> tuple[float, float]:
    """(model seconds, padded tokens / real tokens) of the corpus through one layout."""
    sizes = {n: tuple(sorted({1} | {b for b, m in shapes if m == n})) for n in buckets}
    total = padded = 0.0
    for start in range(0, len(order), batch_size):
        rows = np.minimum(lengths[order[start:start + batch_size]], buckets[-1])
        chosen = np.array([next(b for b in buckets if b >= n) for n in rows])
        for bucket in np.unique(chosen):
            for batch in row_plan(int((chosen == bucket).sum()), sizes[int(bucket)]):
                total += cost(batch, int(bucket))
                padded += batch * int(bucket)
    return total / 1000, padded / float(np.minimum(lengths, buckets[-1]).sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="a LiteRT text bundle with sequence buckets (edgesdk export --target android)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/stsb/dev.tsv"))
    parser.add_argument("--layout", action="append", default=[], help="buckets;BxL,... to price (repeatable)")
    parser.add_argument("--batch", type=int, default=32, help="embed() batch size replayed (default 32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    layouts = [(text, parse_layout(text)) for text in args.layout]  # refused before any timing
    with load(args.bundle, threads=args.threads) as runner:
        if runner.bundle.backend != "tflite" or not runner.static_lengths:
            raise SystemExit(f"{args.bundle}: not a LiteRT text bundle with sequence buckets")
        measured = time_signatures(runner, args.rounds)
        texts = read_corpus(args.data)
        lengths = np.concatenate([runner.tokenize(texts[i:i + 256])["attention_mask"].sum(axis=1)
                                  for i in range(0, len(texts), 256)])
        own = (tuple(runner.static_lengths), tuple(runner.static_batches))
    coef, *_ = np.linalg.lstsq(np.array([features(*s) for s in measured]), np.array(list(measured.values())),
                               rcond=None)

    def cost(batch: int, length: int) -> float:
        return measured.get((batch, length), float(np.array(features(batch, length)) @ coef))

    print(f"{len(texts)} texts, {lengths.mean():.1f} tokens mean; signatures timed ({args.threads} thread(s), "
          f"p50 of {args.rounds}):")
    for (batch, length), ms in measured.items():
        fit = float(np.array(features(batch, length)) @ coef)
        print(f"  [{batch:>3}, {length:>4}]  {ms:8.2f} ms  {ms / (batch * length) * 1000:7.1f} us/token  "
              f"(model {fit:7.2f})")
    print(f"{'layout':70} {'sigs':>4} {'model s':>8} {'padding':>8}")
    order = np.argsort(-lengths, kind="stable")  # embed()'s order: most tokens first
    for label, (buckets, shapes) in [("this bundle", own), *layouts]:
        seconds, pad = replay(lengths, order, buckets, shapes, cost, args.batch)
        print(f"{label[:70]:70} {len(buckets) + len(shapes):4} {seconds:8.2f} {pad:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
