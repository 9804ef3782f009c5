"""`edgesdk eval`: task metrics of a bundle in its own runtime, optionally beside an FP32 reference bundle.

    edgesdk eval dist/m-intel-int8 --task stsb --data stsb/dev.tsv --reference dist/m-intel-fp32
    edgesdk eval dist/m-intel-int8 --task cosine --data texts.txt --reference dist/m-intel-fp32
    edgesdk eval dist/clf-android-int8 --task sst2 --data sst2/dev.tsv
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InputError
from .evaluate import TASKS, fidelity, read_labelled, read_pairs, recall_at_k, stsb_spearman
from .quant import load_texts
from .runtime import load


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="task metrics of a bundle (STS-B Spearman, SST-2 accuracy, cosine/recall@10)",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, help="stsb: TSV sentence1/sentence2/score; sst2: TSV sentence/label; "
                                                 "cosine: one text per line (or TSV with a sentence column)")
    p.add_argument("--reference", help="an FP32 bundle of the same model: adds its metric and the drop, "
                                       "cosine fidelity and recall@10 vs it")
    p.add_argument("--limit", type=int, help="use only the first N rows")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="write the metrics here")
    p.set_defaults(func=run)


def run(args) -> int:
    runners = [load(args.bundle, threads=args.threads)]
    if args.reference:
        runners.append(load(args.reference, threads=args.threads))
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be positive, got {args.limit}.")
    metrics = {"bundle": args.bundle, "task": args.task, "data": args.data, "reference": args.reference}
    if args.task == "stsb":
        metrics.update(_stsb(runners, args))
    elif args.task == "sst2":
        metrics.update(_sst2(runners, args))
    else:
        metrics.update(_cosine(runners, args))
    for key, value in metrics.items():
        print(f"{key:24} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def _stsb(runners, args) -> dict:
    pairs = read_pairs(args.data)
    if args.limit:
        from .evaluate import PairSet

        pairs = PairSet(pairs.first[: args.limit], pairs.second[: args.limit], pairs.scores[: args.limit])
    out = {"pairs": len(pairs.scores), "spearman": stsb_spearman(runners[0].embed, pairs)}
    if len(runners) > 1:
        out["spearman_reference"] = stsb_spearman(runners[1].embed, pairs)
        out["spearman_drop_points"] = round(out["spearman_reference"] - out["spearman"], 3)
        texts = list(dict.fromkeys(pairs.first + pairs.second))
        out.update(_compare(runners, texts))
    return out


def _sst2(runners, args) -> dict:
    from .evaluate import accuracy

    data = read_labelled(args.data)
    texts, gold = list(data.texts[: args.limit]), data.labels[: args.limit]
    out = {"rows": len(texts)}
    for name, runner in zip(("accuracy", "accuracy_reference"), runners):
        result = runner.classify(texts)
        out[name] = accuracy(result.labels, gold, result.label_names)
    if len(runners) > 1:
        out["accuracy_drop_points"] = round(out["accuracy_reference"] - out["accuracy"], 3)
    return out


def _cosine(runners, args) -> dict:
    if len(runners) < 2:
        raise InputError("--task cosine compares with an FP32 bundle: pass --reference BUNDLE.")
    texts = list(load_texts(args.data).texts[: args.limit])
    return _compare(runners, texts)


def _compare(runners, texts: list[str]) -> dict:
    got, ref = runners[0].embed(texts), runners[1].embed(texts)
    fid = fidelity(got, ref, runners[1].bundle.path.name)
    return {"texts": len(texts), "cosine_mean": fid.cosine_mean, "cosine_min": fid.cosine_min,
            "max_abs_error": fid.max_abs_error, "recall_at_10": recall_at_k(got, ref, 10)}


__all__ = ["add_parser", "run"]
