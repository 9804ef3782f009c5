"""The small-MLP reference: PyTorch's own post-training static INT8 beside edgesdk's INT8 bundles of the same model.

A Linear → ReLU → Linear MLP (model.py: 64 → 256 → 10) is trained for a few seconds on scikit-learn's bundled
digits data (1 797 8×8 handwritten digits as 64-feature rows; nothing is downloaded), then quantized two ways:

- **PyTorch**: eager-mode post-training static quantization (`torch.ao.quantization`, the `x86` engine: fbgemm
  kernels, per-channel int8 weights, uint8 activations, Linear+ReLU fused), calibrated on the training rows.
  Eager mode is deprecated in torch 2.13 (it warns and points to torchao's PT2E) but still runs real int8 kernels;
  PT2E's `convert_pt2e` gives a Q/DQ reference graph that only becomes int8 code under `torch.compile`
  (inductor), so it would not be a like-for-like eager reference here.
- **edgesdk**: `edgesdk export --target onnxruntime,intel --precision fp32,int8` of the same factory + weights,
  calibrated on the same rows (static INT8, NNCF).

For every row: size in bytes (the serialized state dict for PyTorch, the artefact files for a bundle), test
accuracy, max abs error and cosine of the logits vs PyTorch FP32 on the held-out rows, and p50 latency at batch 1
and batch 64 on 1 thread, all six models interleaved in one process.

    python examples/mlp_reference/run.py            # ~1 min
    python examples/mlp_reference/run.py --quick    # what tests/test_mlp_reference.py runs

Writes OUT/results.json and OUT/results.md (OUT defaults to examples/mlp_reference/results).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FACTORY = HERE / "model.py"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--steps", type=int, default=400, help="full-batch Adam steps on the digits train split")
    p.add_argument("--iterations", type=int, default=300, help="timed runs per model and batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer steps and timed runs: checks the pipeline")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.iterations = 100, 20
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    data = digits(args.seed)
    fp32 = train(data, args.steps)
    weights = out / "mlp.safetensors"
    from safetensors.torch import save_file

    save_file(fp32.state_dict(), str(weights))
    np.savez(out / "calibration.npz", input=data["x_train"])
    np.savez(out / "heldout.npz", input=data["x_test"])

    int8 = pytorch_int8(fp32, data["x_train"])
    bundles = edgesdk_bundles(out, weights, len(data["x_train"]))

    x_test = torch.from_numpy(data["x_test"])
    with torch.inference_mode():
        reference = fp32(x_test).numpy()
    rows = [{"name": "PyTorch FP32 (eager)", "kind": "pytorch", "precision": "fp32",
             "size_bytes": state_dict_bytes(fp32), "predict": lambda x: fp32(torch.from_numpy(x)).numpy()},
            {"name": f"PyTorch INT8 (torch.ao eager PTQ, {torch.backends.quantized.engine})", "kind": "pytorch",
             "precision": "int8", "size_bytes": state_dict_bytes(int8),
             "predict": lambda x: int8(torch.from_numpy(x)).numpy()}]
    from edgesdk.runtime import load

    runners = []
    for b in bundles:
        runner = load(b.path, threads=1)
        runners.append(runner)
        rows.append({"name": f"edgesdk {b.target} {b.precision}", "kind": "edgesdk", "target": b.target,
                     "precision": b.precision, "size_bytes": b.size_bytes, "bundle": os.path.relpath(b.path, out),
                     "predict": lambda x, r=runner: r.run({"input": x})["output"]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for row in rows:
                row.update(errors(row["predict"](data["x_test"]), reference, data["y_test"]))
            latency(rows, data["x_test"], args.iterations)
    finally:
        torch.set_num_threads(threads)
        for runner in runners:
            runner.close()
    fp32_size = rows[0]["size_bytes"]
    for row in rows:
        row.pop("predict")
        row["size_vs_pytorch_fp32"] = round(row["size_bytes"] / fp32_size, 3)
    result = {"data": data["name"], "fp32_max_abs_logit": float(np.abs(reference).max()), "train_rows": len(data["x_train"]), "test_rows": len(data["x_test"]),
              "steps": args.steps, "iterations": args.iterations, "quick": args.quick, "rows": rows,
              "seconds": round(time.perf_counter() - started, 1), "machine": machine(),
              "versions": versions()}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    table = results_table(result)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


def digits(seed: int) -> dict:
    """scikit-learn's bundled digits, split 80/20 (stratified, seeded), standardised on the train split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 1e-3, std, 1.0)  # pixels always 0 in train: leave them unscaled, not blown up by 1/eps
    def scale(a):
        return ((a - mean) / std).astype(np.float32)
    return {"name": "sklearn load_digits (1797 rows, 64 features, 10 classes)", "x_train": scale(x_train),
            "y_train": y_train, "x_test": scale(x_test), "y_test": y_test}


def train(data: dict, steps: int):
    import torch

    sys.path.insert(0, str(HERE))
    from model import build

    model = build()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"]).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def pytorch_int8(fp32, calibration: np.ndarray):
    """torch.ao eager-mode static PTQ (x86 engine) of a copy of the FP32 model."""
    import copy

    import torch
    import torch.ao.quantization as tq

    torch.backends.quantized.engine = "x86"
    model = torch.nn.Sequential(tq.QuantStub(), *copy.deepcopy(fp32), tq.DeQuantStub()).eval()
    model.qconfig = tq.get_default_qconfig("x86")
    with warnings.catch_warnings():  # eager mode's deprecation notice, said once in the module docstring
        warnings.simplefilter("ignore")
        tq.fuse_modules(model, [["1", "2"]], inplace=True)
        prepared = tq.prepare(model)
        with torch.inference_mode():
            prepared(torch.from_numpy(calibration))
        return tq.convert(prepared)


def edgesdk_bundles(out: Path, weights: Path, samples: int):
    """FP32 and static INT8 for onnxruntime and intel, calibrated on every train row (as PyTorch's is)."""
    from edgesdk.api import ExportOptions, export
    from edgesdk.frontends import SourceOptions
    from edgesdk.quant import QuantOverrides

    result = export(ExportOptions(
        targets=("onnxruntime", "intel"), precisions=("fp32", "int8"), model=f"{FACTORY}:build",
        out=str(out / "dist"), calibration=str(out / "calibration.npz"), fidelity_data=str(out / "heldout.npz"),
        progress=False, quant=QuantOverrides(mode="static", samples=samples), source=SourceOptions(input_shapes=((None, (1, 64)),), weights=str(weights))))
    return result.bundles


def state_dict_bytes(model) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def errors(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    a, b = logits.astype(np.float64), reference.astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"accuracy": round(100 * float((logits.argmax(1) == labels).mean()), 2),
            "max_abs_error": float(np.abs(a - b).max()), "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def latency(rows: list[dict], x: np.ndarray, iterations: int) -> None:
    """p50 of every model at batch 1 and 64, interleaved (A, B, C, ... A, B, C) so load hits all alike."""
    from edgesdk.runtime.bench import BenchConfig, run_interleaved, timer

    for batch in (1, 64):
        feeds = np.ascontiguousarray(x[:batch])
        sinks: list[list[float]] = [[] for _ in rows]
        run_interleaved([timer(r["predict"], feeds) for r in rows], sinks,
                        BenchConfig(threads=1, batch=batch, warmup=max(3, iterations // 10), iterations=iterations))
        for row, samples in zip(rows, sinks):
            row[f"p50_us_batch{batch}"] = round(1000 * float(np.percentile(samples, 50)), 1)


def results_table(result: dict) -> str:
    lines = [f"{result['data']}: {result['train_rows']} train / {result['test_rows']} test rows; "
             f"{result['steps']} Adam steps. Errors are of the 10 logits vs PyTorch FP32 on the test rows (FP32 logits reach "
             f"±{result['fp32_max_abs_logit']:.1f}); both INT8 paths calibrate on all train rows. Latency is "
             f"the p50 of {result['iterations']} interleaved runs on 1 thread, on {result['machine']['cpu']}.", "",
             "| model | precision | size bytes | × FP32 size | test acc % | max abs err | cosine mean | cosine min | "
             "top-1 agree | p50 µs b=1 | p50 µs b=64 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['precision']} | {r['size_bytes']} | {r['size_vs_pytorch_fp32']:.3f} | "
                     f"{r['accuracy']:.2f} | {r['max_abs_error']:.4f} | {r['cosine_mean']:.6f} | "
                     f"{r['cosine_min']:.6f} | {100 * r['top1_agreement']:.1f} % | {r['p50_us_batch1']:.1f} | "
                     f"{r['p50_us_batch64']:.1f} |")
    lines += ["", "PyTorch INT8: `torch.ao.quantization` eager static PTQ, x86 engine, `get_default_qconfig('x86')` "
              "(histogram observer for uint8 activations, per-channel symmetric int8 weights), Linear+ReLU fused. "
              "edgesdk INT8: each profile's static NNCF PTQ (min-max, asymmetric activations, per-channel weights).",
              "", "Size: PyTorch rows are `torch.save(model.state_dict())` bytes; edgesdk rows are the bundle's "
              "artefact files (model.onnx, or model.xml + model.bin), without manifest, golden data or report."]
    return "\n".join(lines)


def machine() -> dict:
    from edgesdk.runtime.bench import machine_summary

    return machine_summary()


def versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("torch", "onnxruntime", "openvino", "nncf", "scikit-learn")}


if __name__ == "__main__":
    sys.exit(main())
