#!/usr/bin/env python3
"""Throughput on a real corpus: sentence-transformers `encode()` vs each bundle's `embed()`, same texts, same batch.

    python scripts/bench_corpus.py dist/all-minilm-l6-v2-android-int8 [MORE_BUNDLES...] \
        --data ../shared/data/stsb/dev.tsv --batch 32 --threads 1 --rounds 2

The job users actually run: every unique sentence of the file (a TSV with sentence/sentence1/sentence2/text
columns, or one text per line), in batches, torch and the runtimes pinned to the same thread count. Rounds are
interleaved (ST, bundle 1, bundle 2, ..., then again) so a noisy shared CPU hurts all alike; the best round of
each counts. Prints sentences/s, the ratio to ST, and each bundle's cosine to ST's vectors (mean / min).
Needs the export extra (sentence-transformers) besides each bundle's runtime.
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edgesdk.runtime import load  # noqa: E402

COLUMNS = ("sentence", "sentence1", "sentence2", "text")


def read_corpus(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    first = text.split("\n", 1)[0].split("\t")
    if any(c in first for c in COLUMNS):
        rows = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
        found = [row[c] for row in rows for c in COLUMNS if row.get(c)]
    else:
        found = [line for line in text.splitlines() if line.strip()]
    return list(dict.fromkeys(found))


def bundle_labels(paths: list[str]) -> list[str]:
    """Each bundle's folder name, with its parent folder where two bundles share a name (before/after runs)."""
    names = [Path(p).name for p in paths]
    return [f"{Path(p).parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/stsb/dev.tsv"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, help="first N sentences only")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = read_corpus(args.data)[: args.limit]
    runners = [load(b, threads=args.threads) for b in args.bundles]
    st = SentenceTransformer(runners[0].manifest.model.source, device="cpu")
    jobs = {"sentence-transformers encode() (PyTorch FP32)":
            lambda: st.encode(texts, batch_size=args.batch, convert_to_numpy=True)}
    for label, runner in zip(bundle_labels(args.bundles), runners):
        jobs[label] = (lambda r: lambda: r.embed(texts, batch_size=args.batch))(runner)
    best = {name: float("inf") for name in jobs}
    vectors = {}
    for _ in range(args.rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            vectors[name] = job()
            best[name] = min(best[name], time.perf_counter() - start)
    names = list(jobs)
    reference = vectors[names[0]] / np.linalg.norm(vectors[names[0]], axis=1, keepdims=True)
    lengths = [len(e) for e in st.tokenizer(texts)["input_ids"]]
    print(f"{len(texts)} sentences of {args.data} (mean {np.mean(lengths):.1f} tokens), batch {args.batch}, "
          f"{args.threads} thread(s), best of {args.rounds} interleaved rounds")
    table = []
    for name in names:
        v = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        cos = (v * reference).sum(1)
        rate = len(texts) / best[name]
        table.append({"pipeline": name, "sentences_per_s": round(rate, 1),
                      "vs_sentence_transformers": round(rate / (len(texts) / best[names[0]]), 2),
                      "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)})
        print(f"{name:52} {rate:8.1f} sent/s  x{table[-1]['vs_sentence_transformers']:5.2f}  "
              f"cos mean {cos.mean():.5f} min {cos.min():.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sentences": len(texts), "batch": args.batch, "threads": args.threads,
                                               "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
