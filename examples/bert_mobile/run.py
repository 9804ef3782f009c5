"""BERT on mobile: fine-tune all-MiniLM-L6-v2 on SST-2, quantize it (PTQ and QAT INT8), export every target,
and measure each bundle in its own runtime: SST-2 dev accuracy, size, p50 latency at seq 128 on this CPU.

    python examples/bert_mobile/run.py                 # the default run (~25 min on 2 CPU cores)
    python examples/bert_mobile/run.py --quick         # a smoke run on a few rows (what the test runs)
    python examples/bert_mobile/run.py --train-limit 0 --epochs 3 --qat-limit 0   # the full SST-2 train set

Writes OUT/results.json (everything), OUT/results.md (the table) and OUT/accuracy_vs_latency.png; bundles go to
OUT/dist and the trained models to OUT/dist/models (reused by a rerun with the same settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "sst2"
TARGETS = "android,intel,onnxruntime,jetson"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default: examples/bert_mobile/results)")
    p.add_argument("--train", default=str(DATA / "train.tsv"), help="TSV sentence<TAB>label (default: SST-2 train)")
    p.add_argument("--dev", default=str(DATA / "dev.tsv"), help="TSV sentence<TAB>label (default: SST-2 dev)")
    p.add_argument("--model", help="model folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--targets", default=TARGETS, help=f"comma-separated targets (default: {TARGETS})")
    p.add_argument("--train-limit", type=int, default=8000, help="FP32 fine-tune rows, seeded subset (0 = all)")
    p.add_argument("--epochs", type=float, default=2.0, help="FP32 fine-tune epochs")
    p.add_argument("--qat-limit", type=int, default=2000, help="QAT rows, seeded subset (0 = all)")
    p.add_argument("--qat-epochs", type=float, default=1.0, help="QAT epochs")
    p.add_argument("--dev-limit", type=int, help="evaluate on the first N dev rows only (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes that evaluate bundles in parallel "
                                                           "(one thread each)")
    p.add_argument("--replot", action="store_true", help="only redraw results.md and the plot from OUT/results.json")
    p.add_argument("--quick", action="store_true", help="a few rows and samples everywhere: checks the pipeline, "
                                                        "not the accuracy")
    args = p.parse_args(argv)
    if args.quick:
        args.train_limit, args.epochs, args.qat_limit, args.qat_epochs = 64, 1.0, 32, 1.0
        args.dev_limit = args.dev_limit or 48
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # this host has no NNAPI / GPU delegate: say so once instead of per bundle (a phone keeps the profile's order)
    os.environ.setdefault("EDGESDK_TFLITE_DELEGATES", "xnnpack")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from edgesdk.api import ExportOptions
    from edgesdk.quant import QuantOverrides
    from edgesdk.train.loop import TrainConfig
    from edgesdk.train.pipeline import QAT_DEFAULTS, TrainingOptions, export_trained

    out = Path(args.out)
    if args.replot:
        return write_reports(json.loads((out / "results.json").read_text()), out)
    for name in ("train", "dev"):
        if not Path(getattr(args, name)).is_file():
            print(f"error: --{name} {getattr(args, name)} does not exist. The default is SST-2 from ../shared/data/sst2 "
                  f"beside the project; pass --{name} FILE (TSV sentence<TAB>label).", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dev = _dev_file(args, out)
    options = ExportOptions(targets=tuple(t for t in args.targets.split(",") if t), model=args.model,
                            out=str(out / "dist"), fidelity_data=dev,
                            fidelity_samples=32 if args.quick else 256,
                            quant=QuantOverrides(samples=32) if args.quick else QuantOverrides())
    training = TrainingOptions(
        train_data=args.train, qat=True, with_ptq=True,
        config=replace(TrainConfig(), limit=args.train_limit or None, epochs=args.epochs, seed=args.seed),
        qat_config=replace(QAT_DEFAULTS, limit=args.qat_limit or None, epochs=args.qat_epochs, seed=args.seed))
    trained = export_trained(options, training)
    export_s = time.perf_counter() - started

    rows = [{"kind": kind, "bundle": b.path, "target": b.target, "backend": b.backend, "precision": b.precision,
             "size_mb": round(b.size_bytes / 1e6, 1), "top1_agreement_vs_fp32": b.fidelity.get("top1_agreement"),
             "kept_in_float": len(b.kept_in_float)} for kind, b in trained.bundles]
    jobs = sorted(rows, key=lambda r: -Path(r["bundle"]).joinpath("report.json").stat().st_size)  # big reports first
    from edgesdk.runtime.registry import runtime_backend

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        scores = dict(zip([r["bundle"] for r in jobs], pool.map(evaluate_bundle, [r["bundle"] for r in jobs],
                                                                   [dev] * len(jobs))))
    for row in rows:
        row.update(scores[row["bundle"]])
        row["runtime"] = runtime_backend(row["backend"]).label
    for row in rows:  # latency one bundle at a time, nothing else running
        row["p50_ms_seq128"] = latency_p50(row["bundle"], quick=args.quick)
    reference = pytorch_reference(trained.fp32_model, dev, quick=args.quick)
    result = {"model": trained.fp32_model, "qat_models": trained.qat_models, "dev": args.dev, "dev_rows": reference["rows"],
              "train": args.train, "train_rows_fp32": args.train_limit or "all", "epochs_fp32": args.epochs,
              "train_rows_qat": args.qat_limit or "all", "epochs_qat": args.qat_epochs, "seed": args.seed,
              "pytorch_fp32": reference, "bundles": rows, "export_seconds": round(export_s, 1),
              "total_seconds": round(time.perf_counter() - started, 1), "machine": machine()}
    for row in rows:  # paths relative to OUT, so the results read the same wherever the project lives
        row["bundle"] = os.path.relpath(row["bundle"], out)
    result["model"] = os.path.relpath(result["model"], out)
    result["qat_models"] = {k: os.path.relpath(v, out) for k, v in result["qat_models"].items()}
    result["train"], result["dev"] = Path(args.train).name, Path(args.dev).name
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_reports(result, out)
    print(f"in {result['total_seconds'] / 60:.1f} min")
    return 0


def write_reports(result: dict, out: Path) -> int:
    table = results_table(result)
    (out / "results.md").write_text(table + "\n")
    plot(result, out / "accuracy_vs_latency.png")
    print(table)
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'accuracy_vs_latency.png'}")
    return 0


def _dev_file(args, out: Path) -> str:
    """The dev TSV, cut to --dev-limit rows when asked (a copy under OUT)."""
    if not args.dev_limit:
        return args.dev
    lines = Path(args.dev).read_text(encoding="utf-8").splitlines()
    cut = out / "dev-subset.tsv"
    cut.write_text("\n".join(lines[: args.dev_limit + 1]) + "\n", encoding="utf-8")
    return str(cut)


def evaluate_bundle(path: str, dev: str) -> dict:
    """Accuracy on the dev set, the bundle running in its own runtime (a worker process, one thread)."""
    from edgesdk.evaluate import accuracy, read_labelled
    from edgesdk.runtime import load

    data = read_labelled(dev)
    with load(path, threads=1) as runner:
        started = time.perf_counter()
        result = runner.classify(list(data.texts))
    return {"accuracy": accuracy(result.labels, data.labels, result.label_names), "rows": len(data.texts),
            "eval_seconds": round(time.perf_counter() - started, 1)}


def latency_p50(path: str, quick: bool) -> float:
    from edgesdk.runtime.bench import BenchConfig, bench

    config = BenchConfig(threads=1, batch=1, seq=128, warmup=1 if quick else 3, iterations=3 if quick else 20)
    return round(bench([path], config)[0].latency_ms["p50"], 2)


def pytorch_reference(model_dir: str, dev: str, quick: bool) -> dict:
    """The FP32 fine-tune itself in PyTorch: the accuracy every bundle is compared with, and eager latency."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgesdk.evaluate import accuracy, read_labelled
    from edgesdk.runtime.bench import BENCH_TEXT
    from edgesdk.train.classifier import predict_labels, text_encoder

    data = read_labelled(dev)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predicted = predict_labels(model, Path(model_dir), data.texts)
        encode = text_encoder(Path(model_dir), 512)
        with torch.inference_mode():
            feeds = {k: torch.from_numpy(v[:, :128]) for k, v in encode([BENCH_TEXT]).items()}
            for _ in range(1 if quick else 3):
                model(**feeds)
            samples = []
            for _ in range(3 if quick else 20):
                t = time.perf_counter()
                model(**feeds)
                samples.append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {"accuracy": accuracy(predicted, data.labels, names), "rows": len(data.texts),
            "p50_ms_seq128": round(float(np.percentile(samples, 50)), 2), "runtime": f"PyTorch {torch.__version__} eager"}


def results_table(result: dict) -> str:
    ref = result["pytorch_fp32"]
    fp32_by_target = {r["target"]: r["accuracy"] for r in result["bundles"] if r["kind"] in ("fp32", "fp16")}
    lines = [f"SST-2 dev ({result['dev_rows']} sentences). FP32 fine-tune: {result['train_rows_fp32']} train rows × "
             f"{result['epochs_fp32']} epochs; QAT: {result['train_rows_qat']} rows × {result['epochs_qat']} epoch(s). "
             f"Latency: p50 of batch 1 at seq 128, 1 thread, on {result['machine']['cpu']}.", "",
             "| target | runtime | kind | precision | accuracy % | Δ vs FP32 PyTorch | Δ vs target float | "
             "agreement vs float source | size MB | p50 ms |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
             f"| (reference) | {ref['runtime']} | fp32 | fp32 | {ref['accuracy']:.2f} | – | – | – | – | "
             f"{ref['p50_ms_seq128']:.1f} |"]
    order = {"fp32": 0, "fp16": 1, "ptq": 2, "qat": 3}
    for r in sorted(result["bundles"], key=lambda r: (r["target"], order[r["kind"]])):
        base = fp32_by_target.get(r["target"])
        vs_target = f"{r['accuracy'] - base:+.2f}" if base is not None and r["kind"] in ("ptq", "qat") else "–"
        agreement = f"{100 * r['top1_agreement_vs_fp32']:.1f} %" if r["top1_agreement_vs_fp32"] is not None else "–"
        lines.append(f"| {r['target']} | {r['runtime']} | {r['kind']} | {r['precision']} | {r['accuracy']:.2f} | "
                     f"{r['accuracy'] - ref['accuracy']:+.2f} | {vs_target} | {agreement} | {r['size_mb']:.1f} | "
                     f"{r['p50_ms_seq128']:.1f} |")
    lines += ["", "Δ vs target float: against the same target's FP32 (jetson: FP16) bundle. Agreement vs float "
              "source: share of 256 dev sentences whose label matches the PyTorch model the bundle was exported "
              "from, measured at export (the FP32 fine-tune; for QAT bundles, the QAT model with its weights on the "
              "int8 grid). Jetson bundles run here on ONNX Runtime's CPU provider (the same Q/DQ graph TensorRT "
              "builds from), so their latency is not a Jetson number."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"fp32": "o", "fp16": "D", "ptq": "s", "qat": "^"}
    targets = sorted({r["target"] for r in result["bundles"]})
    colors = dict(zip(targets, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(10, 5))
    for r in result["bundles"]:
        ax.scatter(r["p50_ms_seq128"], r["accuracy"], marker=markers[r["kind"]], color=colors[r["target"]], s=60)
    ref = result["pytorch_fp32"]
    ax.scatter(ref["p50_ms_seq128"], ref["accuracy"], marker="*", color="black", s=120)
    ax.axhline(ref["accuracy"] - 0.5, color="grey", linestyle=":", linewidth=1)
    handles = [plt.Line2D([], [], color=colors[t], marker="o", linestyle="", label=t) for t in targets]
    handles += [plt.Line2D([], [], color="grey", marker=m, linestyle="", label=k) for k, m in markers.items()
                if any(r["kind"] == k for r in result["bundles"])]
    handles += [plt.Line2D([], [], color="black", marker="*", linestyle="", label="PyTorch FP32"),
                plt.Line2D([], [], color="grey", linestyle=":", label="FP32 − 0.5 points")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1, seq 128, 1 thread (ms, log scale)")
    ax.set_ylabel(f"SST-2 dev accuracy (%), {result['dev_rows']} sentences")
    ax.set_title("all-MiniLM-L6-v2 + classification head: accuracy vs latency per target and precision")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict:
    from edgesdk.runtime.bench import machine_summary

    return machine_summary()


if __name__ == "__main__":
    sys.exit(main())
