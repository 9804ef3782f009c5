"""Vision on mobile: a small MobileNet-style CNN on Fashion-MNIST, FP32 vs PTQ INT8 vs QAT INT8 on every target.

Trains fashion_cnn.py (depthwise-separable Conv + BatchNorm + ReLU/HardSwish blocks, 1×28×28 in, 10 classes) on
the Fashion-MNIST training split, quantizes it two ways and exports every available target through edgesdk:

- **FP32** and **PTQ INT8**: `edgesdk export --model fashion_cnn.py:build --weights fp32.safetensors` (each target's
  static post-training quantization, calibrated on a folder of training images).
- **QAT INT8**: NNCF's own QAT on the torch module (`nncf.quantize` on the nn.Module with the onnxruntime profile's
  scheme, through edgesdk's QuantSpec → NNCF mapping; a short fine-tune with BatchNorm statistics frozen;
  `nncf.strip` bakes the weights onto their learned int8 grid), saved as plain float weights in safetensors and
  exported with `--weights qat.safetensors --precision int8` like any other model.

Every bundle's test accuracy is measured at export in its own runtime over the whole 10 000-image test split (written
as PNGs, one folder per class, and passed as `--eval-data`); then size, INT8/FP32 bytes, p50 latency at batch 1 on
1 thread (edgesdk.runtime.bench, a target's FP32/PTQ/QAT bundles interleaved), and whether every BatchNorm was folded
(report.json and the artefact itself).

    python examples/vision_mobile/run.py            # the default run (~15 min on 2 CPU cores)
    python examples/vision_mobile/run.py --quick    # a few hundred images, onnxruntime only (what the test runs)

Data: Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist, `apt-get install
dataset-fashion-mnist`; scripts/setup.sh installs it when run as root), or --data DIR with the four idx .gz files.
Writes OUT/results.json, OUT/results.md and OUT/accuracy_vs_latency.png; bundles go to OUT/dist/{ptq,qat}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FACTORY = HERE / "fashion_cnn.py"
DATA = Path("/usr/share/datasets/fashion-mnist")
TARGETS = "onnxruntime,intel,jetson,android"
LABELS = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
MEAN, STD = 0.286, 0.353  # Fashion-MNIST training pixels / 255
VALIDATION = 5000  # the last training images: never trained on, used for the export's fidelity check


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--data", default=str(DATA), help="folder with the Fashion-MNIST idx .gz files")
    p.add_argument("--targets", default=TARGETS, help=f"comma-separated (default {TARGETS}; the ones that cannot "
                                                      "take image models here are skipped, with the reason)")
    p.add_argument("--epochs", type=float, default=2.0, help="FP32 training epochs over 55 000 images")
    p.add_argument("--qat-epochs", type=float, default=0.5, help="QAT fine-tune epochs")
    p.add_argument("--train-limit", type=int, default=0, help="train on the first N images only (0 = all 55 000)")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0 = all 10 000)")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--fidelity-images", type=int, default=500)
    p.add_argument("--iterations", type=int, default=300, help="timed runs per bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replot", action="store_true", help="only redraw results.md and the plot from results.json")
    p.add_argument("--quick", action="store_true", help="tiny training, a few hundred images, fp32 + int8 on "
                                                        "onnxruntime only: checks the pipeline, not the accuracy")
    args = p.parse_args(argv)
    if args.quick:
        args.targets, args.epochs, args.qat_epochs, args.train_limit = "onnxruntime", 2.0, 0.5, 3000
        args.test_limit, args.calibration_images, args.fidelity_images = args.test_limit or 300, 64, 100
        args.iterations = 20
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # this host has no NNAPI / GPU delegate: say so once instead of per bundle (a phone keeps the profile's order)
    os.environ.setdefault("EDGESDK_TFLITE_DELEGATES", "xnnpack")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    if args.replot:
        return write_reports(json.loads((out / "results.json").read_text()), out)
    files = idx_files(Path(args.data))
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        print(f"error: Fashion-MNIST is not at {args.data} (missing {missing[0]}). Install Debian's "
              "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data DIR holding "
              "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
              "t10k-labels-idx1-ubyte.gz.", file=sys.stderr)
        return 2
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # measured: 2 threads on 2 shared cores ran a training step 10× slower than 1
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = load_fashion_mnist(files, args)
    folders = write_image_folders(data, out / "data", args)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    t = time.perf_counter()
    fp32, reused = trained(out / "fp32.safetensors", {"kind": "fp32", "epochs": args.epochs, "seed": args.seed,
                                                     "train": len(data["x_train"])},
                           lambda: train_fp32(data, args, device))
    fp32_train_s = time.perf_counter() - t
    reference = pytorch_reference(fp32, data)
    t = time.perf_counter()
    qat_info: dict = {}
    def run_qat():
        model, info = train_qat(fp32, data, args, device)
        qat_info.update(info)
        return model
    trained(out / "qat.safetensors", {"kind": "qat", "base": "fp32.safetensors", "epochs": args.qat_epochs,
                                               "seed": args.seed, "train": len(data["x_train"]),
                                               "calibration": args.calibration_images, "fp32_epochs": args.epochs},
                     run_qat, info=qat_info)
    qat_train_s = time.perf_counter() - t

    targets, skipped = available_targets(args.targets)
    t = time.perf_counter()
    rows, failures = [], []
    for target in targets:  # one export per target and kind: a target that fails is recorded, the rest go on
        for kind, weights, precisions in (("ptq", "fp32.safetensors", ("fp32", "int8")),
                                          ("qat", "qat.safetensors", ("int8",))):
            try:
                rows += export_kind(kind, out / weights, [target], precisions, folders, out)
            except Exception as exc:  # EdgeSDKError above all; anything else is a finding too
                logging.error("%s %s failed: %s", target, kind, exc)
                failures.append({"target": target, "kind": kind, "error": f"{type(exc).__name__}: {exc}"[:600]})
                rows += [r for r in _fp32_only(kind, out, weights, target, folders) if r]
    export_s = time.perf_counter() - t
    for row in rows:
        row.update(batchnorm_folded(Path(row["bundle"])))
    measure_latency(rows, args.iterations)
    fp32_bytes = {r["target"]: r["size_bytes"] for r in rows if r["kind"] == "fp32"}
    fp32_p50 = {r["target"]: r["p50_ms"] for r in rows if r["kind"] == "fp32"}
    for row in rows:
        row["size_vs_fp32"] = round(row["size_bytes"] / fp32_bytes[row["target"]], 3)
        row["p50_vs_fp32"] = round(row["p50_ms"] / fp32_p50[row["target"]], 3)
        row["bundle"] = os.path.relpath(row["bundle"], out)
    result = {"data": "Fashion-MNIST (Debian dataset-fashion-mnist)", "train_images": len(data["x_train"]),
              "test_images": len(data["x_test"]), "epochs_fp32": args.epochs, "qat_epochs": args.qat_epochs,
              "calibration_images": args.calibration_images, "fidelity_images": args.fidelity_images,
              "parameters": sum(p.numel() for p in fp32.parameters()), "quick": args.quick,
              "pytorch_fp32": reference, "qat": qat_info, "bundles": rows, "targets_skipped": skipped,
              "export_failures": failures, "weights_reused": reused,
              "seconds": {"fp32_training": round(fp32_train_s, 1), "qat_training": round(qat_train_s, 1),
                          "exports_with_evaluation": round(export_s, 1),
                          "total": round(time.perf_counter() - started, 1)},
              "training_device": device, "machine": machine(), "versions": versions()}
    return write_reports(result, out)


# -- data ---------------------------------------------------------------------------------------------------------
def idx_files(folder: Path) -> dict[str, Path]:
    return {f"{split}_{kind}": folder / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            for split, prefix in (("train", "train"), ("test", "t10k")) for kind in ("images", "labels")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format): magic 0x0000 0x08 (uint8) + rank, big-endian int32 dims, then the bytes."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\0\0" or raw[2] != 8:
        raise ValueError(f"{path} is not a uint8 idx file (magic {raw[:4].hex()})")
    rank = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} bytes for dims {dims}")
    return data.reshape(dims)


def load_fashion_mnist(files: dict[str, Path], args) -> dict[str, np.ndarray]:
    x_train, y_train = read_idx(files["train_images"]), read_idx(files["train_labels"])
    x_test, y_test = read_idx(files["test_images"]), read_idx(files["test_labels"])
    x_val, y_val = x_train[-VALIDATION:], y_train[-VALIDATION:]
    x_train, y_train = x_train[:-VALIDATION], y_train[:-VALIDATION]
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    if args.test_limit:
        x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test,
            "y_test": y_test}


def write_image_folders(data: dict, root: Path, args) -> dict[str, Path]:
    """PNG folders for edgesdk: eval/<label>/ (the test split), calibration/ (training images, seeded draw) and
    fidelity/ (held-out validation images). Rewritten only when the counts changed."""
    from PIL import Image

    rng = np.random.default_rng(args.seed)
    sets = {"eval": (data["x_test"], data["y_test"]),
            "calibration": (data["x_train"][rng.choice(len(data["x_train"]), args.calibration_images, replace=False)],
                            None),
            "fidelity": (data["x_val"][:args.fidelity_images], None)}
    folders = {}
    for name, (images, labels) in sets.items():
        folder = root / name
        folders[name] = folder
        stamp = folder / ".count"
        if stamp.is_file() and stamp.read_text() == f"{len(images)} {args.seed}":
            continue
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        for i, image in enumerate(images):
            sub = folder / LABELS[labels[i]] if labels is not None else folder
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(sub / f"{i:05d}.png")
        stamp.write_text(f"{len(images)} {args.seed}")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    folders["labels"] = root / "labels.txt"
    return folders


def tensors(images: np.ndarray):
    """uint8 [N, 28, 28] → normalised float [N, 1, 28, 28], as the bundle's preprocessing makes them."""
    import torch

    return (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1) - MEAN) / STD


# -- training -----------------------------------------------------------------------------------------------------
def build():
    sys.path.insert(0, str(HERE))
    from fashion_cnn import build as factory

    return factory()


def batches(data: dict, epochs: float, batch: int, seed: int):
    """Seeded shuffled minibatches for `epochs` passes (a fraction ends mid-epoch), with random horizontal flips."""
    import torch

    x, y = tensors(data["x_train"]), torch.from_numpy(data["y_train"].astype(np.int64))
    rng = np.random.default_rng(seed)
    steps = max(1, int(epochs * len(x) / batch))
    order = np.concatenate([rng.permutation(len(x)) for _ in range(int(np.ceil(epochs)) + 1)])
    for step in range(steps):
        idx = torch.from_numpy(order[step * batch:(step + 1) * batch])
        xb = x[idx]
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        xb[flip] = xb[flip].flip(-1)
        yield step, steps, xb, y[idx]


def fit(model, data: dict, epochs: float, lr: float, seed: int, device: str, label: str, freeze_bn=False):
    import torch

    model.to(device).train()
    if freeze_bn:  # QAT: keep the FP32 statistics; a short fine-tune with batch stats would only add noise
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, int(epochs * len(data["x_train"]) / 128))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    started, loss_sum = time.perf_counter(), 0.0
    for step, total, xb, yb in batches(data, epochs, 128, seed):
        loss = torch.nn.functional.cross_entropy(model(xb.to(device)), yb.to(device), label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss.detach())
        if (step + 1) % 100 == 0 or step + 1 == total:
            logging.info("%s: step %d/%d, loss %.3f (%.0fs)", label, step + 1, total, loss_sum / min(100, step + 1)
                         if (step + 1) % 100 == 0 else loss_sum / ((step + 1) % 100), time.perf_counter() - started)
            loss_sum = 0.0
    return model.eval()


def train_fp32(data: dict, args, device: str):
    import torch

    torch.manual_seed(args.seed)
    return fit(build(), data, args.epochs, 3e-3, args.seed, device, "FP32").cpu()


def train_qat(fp32, data: dict, args, device: str):
    """NNCF QAT on the torch module under the onnxruntime profile's scheme, then baked onto the int8 weight grid."""
    import copy

    import nncf
    import torch

    from edgesdk.profiles import load_profile
    from edgesdk.quant import QuantOverrides, QuantSpec
    from edgesdk.quant.nncf_options import nncf_quantize_kwargs

    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "300")  # NNCF's first fake-quantize build can be slow
    spec = QuantSpec.from_profile(load_profile("onnxruntime"), QuantOverrides())
    rng = np.random.default_rng(args.seed + 1)
    calib = tensors(data["x_train"][rng.choice(len(data["x_train"]), args.calibration_images, replace=False)])
    samples = [calib[i:i + 1].to(device) for i in range(len(calib))]
    kwargs = nncf_quantize_kwargs(nncf, spec, (), len(samples), model_type=None)  # CNN scheme, as PTQ uses
    model = copy.deepcopy(fp32).to(device).eval()
    quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
    before = accuracy_of(quantized, data["x_test"], data["y_test"], device)
    fit(quantized, data, args.qat_epochs, 1e-4, args.seed + 2, device, "QAT", freeze_bn=True)
    after = accuracy_of(quantized, data["x_test"], data["y_test"], device)
    stripped = nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=samples[0])
    state = {k: v.cpu() for k, v in stripped.state_dict().items() if not k.startswith("__nncf_hooks")}
    clean = build()
    clean.load_state_dict(state, strict=True)
    baked = accuracy_of(clean.eval(), data["x_test"], data["y_test"], "cpu")
    info = {"tool": f"nncf {nncf.__version__}", "spec_from": "onnxruntime", "preset": kwargs["preset"].name,
            "calibration_images": len(samples), "epochs": args.qat_epochs, "lr": 1e-4, "batchnorm": "frozen",
            "fake_quant_accuracy_before_finetune": before, "fake_quant_accuracy_after_finetune": after,
            "float_accuracy_of_baked_weights": baked,
            "carried_into_bundles": "the weights (baked onto their learned int8 grid by nncf.strip); each target "
                                    "recalibrates activation ranges on the calibration folder"}
    logging.info("QAT: fake-quant accuracy %.2f → %.2f %%, baked float weights %.2f %%", before, after, baked)
    return clean, info


def trained(path: Path, settings: dict, train, info: dict | None = None):
    """The model saved at `path` if it was trained with these settings (a rerun reuses it), else train and save."""
    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("settings") == settings:
        from safetensors.torch import load_file

        model = build()
        model.load_state_dict(load_file(str(path)))
        if info is not None:
            info.update(json.loads(stamp.read_text()).get("info", {}))
        logging.info("reusing %s (trained with the same settings)", path)
        return model.eval(), True
    model = train()
    save_weights(model, path)
    stamp.write_text(json.dumps({"settings": settings, "info": info or {}}, indent=2))
    return model, False


def _fp32_only(kind: str, out: Path, weights: str, target: str, folders: dict) -> list[dict]:
    """After a failed fp32+int8 export, the target's FP32 bundle alone (so its INT8 rows still have a baseline)."""
    if kind != "ptq":
        return []
    try:
        return export_kind("ptq", out / weights, [target], ("fp32",), folders, out)
    except Exception as exc:
        logging.error("%s fp32 failed too: %s", target, exc)
        return []


def accuracy_of(model, images: np.ndarray, labels: np.ndarray, device: str) -> float:
    import torch

    hits = 0
    with torch.inference_mode():
        for i in range(0, len(images), 500):
            hits += int((model(tensors(images[i:i + 500]).to(device)).argmax(1).cpu().numpy()
                         == labels[i:i + 500]).sum())
    return round(100 * hits / len(images), 2)


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def pytorch_reference(model, data: dict) -> dict:
    """The FP32 model itself: test accuracy and eager p50 at batch 1, 1 thread."""
    import torch

    x = tensors(data["x_test"][:1])
    with torch.inference_mode():
        for _ in range(20):
            model(x)
        samples = []
        for _ in range(200):
            t = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - t) * 1000)
    return {"accuracy": accuracy_of(model, data["x_test"], data["y_test"], "cpu"),
            "p50_ms": round(float(np.percentile(samples, 50)), 3), "runtime": f"PyTorch {torch.__version__} eager"}


# -- export and measurement ---------------------------------------------------------------------------------------
def available_targets(requested: str) -> tuple[list[str], dict[str, str]]:
    """The requested targets whose backend converts image models here, and why the others are skipped."""
    from edgesdk.backends import backend
    from edgesdk.profiles import load_profile

    keep, skipped = [], {}
    for name in [t for t in requested.split(",") if t]:
        families = backend(load_profile(name).backend).families
        if "image" in families:
            keep.append(name)
        else:
            skipped[name] = f"its backend takes {', '.join(families)} models only, not image models (yet)"
    if "tvm" not in requested:
        skipped.setdefault("tvm-x86", "apache-tvm cannot be installed beside the rest of this environment "
                                      "(see README: TVM)")
    return keep, skipped


def export_kind(kind: str, weights: Path, targets: list[str], precisions: tuple[str, ...], folders: dict,
                out: Path) -> list[dict]:
    from edgesdk.api import ExportOptions, export
    from edgesdk.frontends import SourceOptions
    from edgesdk.quant import QuantOverrides

    # static INT8 on every target: on a CPU without VNNI edgesdk would otherwise also build and time other modes
    # (intel: weight-only) and keep the fastest; this study compares static PTQ with QAT
    result = export(ExportOptions(
        targets=tuple(targets), precisions=precisions, model=f"{FACTORY}:build", out=str(out / "dist" / kind),
        calibration=str(folders["calibration"]), fidelity_data=str(folders["fidelity"]),
        fidelity_samples=len(list(folders["fidelity"].glob("*.png"))), eval_data=str(folders["eval"]),
        progress=False, quant=QuantOverrides(mode="static"),
        source=SourceOptions(input_shapes=((None, (1, 1, 28, 28)),), weights=str(weights),
                                             mean=(MEAN,), std=(STD,), labels=str(folders["labels"]))))
    from edgesdk.runtime.registry import runtime_backend

    return [{"kind": "fp32" if b.precision == "fp32" else kind, "target": b.target, "backend": b.backend,
             "runtime": runtime_backend(b.backend).label, "precision": b.precision, "bundle": b.path,
             "size_bytes": b.size_bytes, "accuracy": b.evaluation["value"], "eval_rows": b.evaluation["rows"],
             "top1_agreement_vs_source": b.fidelity.get("top1_agreement"), "kept_in_float": len(b.kept_in_float),
             "export_seconds": b.seconds} for b in result.bundles]


def batchnorm_folded(bundle: Path) -> dict:
    """BatchNorm counts: in the source module, after the graph passes (report.json), and in the artefact itself."""
    import re

    report = json.loads((bundle / "report.json").read_text())["graph_passes"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = bundle / manifest["artefact"]["entry"]
    if entry.suffix == ".onnx":
        import onnx

        in_artefact = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(entry)).graph.node)
    elif entry.suffix == ".xml":
        in_artefact = len(re.findall(r'type="BatchNorm', entry.read_text()))
    else:  # a .tflite flatbuffer has no BatchNorm operator at all: it folds at conversion or fails
        in_artefact = 0
    return {"batchnorm_in_source": report.get("source_modules", {}).get("BatchNorm2d", 0),
            "batchnorm_after_passes": report.get("ops_after", {}).get("BatchNormalization", 0),
            "batchnorm_in_artefact": in_artefact}


def measure_latency(rows: list[dict], iterations: int) -> None:
    """p50 at batch 1 on 1 thread: a target's bundles interleaved (FP32, PTQ, QAT, FP32, ...), one target at a time."""
    from edgesdk.runtime.bench import BenchConfig, bench

    config = BenchConfig(threads=1, batch=1, warmup=max(5, iterations // 10), iterations=iterations)
    for target in sorted({r["target"] for r in rows}):
        mine = [r for r in rows if r["target"] == target]
        for row, res in zip(mine, bench([r["bundle"] for r in mine], config)):
            row["p50_ms"] = round(res.latency_ms["p50"], 4)


def goals(result: dict) -> dict:
    rows = result["bundles"]
    fp32 = {r["target"]: r for r in rows if r["kind"] == "fp32"}
    int8 = [r for r in rows if r["precision"] == "int8"]
    def row_id(r):
        return f"{r['target']} {r['kind']}"
    out = {
        "int8_accuracy_within_0.5_of_fp32": {row_id(r): round(r["accuracy"] - fp32[r["target"]]["accuracy"], 2)
                                             for r in int8},
        "int8_bytes_at_most_0.30_fp32": {row_id(r): r["size_vs_fp32"] for r in int8},
        "batchnorm_folded_everywhere": all(r["batchnorm_after_passes"] == 0 and r["batchnorm_in_artefact"] == 0
                                           and r["batchnorm_in_source"] > 0 for r in rows),
        "onnxruntime_int8_p50_at_most_0.5_fp32": {row_id(r): r["p50_vs_fp32"] for r in int8
                                                  if r["target"] == "onnxruntime"},
    }
    out["int8_not_built"] = [f"{f['target']} {f['kind']}" for f in result.get("export_failures", [])]
    out["met"] = {  # a target whose INT8 failed to build has not met the accuracy goal
        "accuracy": all(d >= -0.5 for d in out["int8_accuracy_within_0.5_of_fp32"].values())
        and not out["int8_not_built"],
        "size": all(v <= 0.30 for v in out["int8_bytes_at_most_0.30_fp32"].values()),
        "batchnorm": out["batchnorm_folded_everywhere"],
        "onnxruntime_latency": all(v <= 0.5 for v in out["onnxruntime_int8_p50_at_most_0.5_fp32"].values()),
    }
    return out


# -- reports ------------------------------------------------------------------------------------------------------
def write_reports(result: dict, out: Path) -> int:
    result["goals"] = goals(result)  # recomputed, so --replot follows a change in the goals
    (out / "results.json").write_text(json.dumps(result, indent=2))
    table = results_table(result)
    (out / "results.md").write_text(table + "\n")
    plot(result, out / "accuracy_vs_latency.png")
    print(table)
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'accuracy_vs_latency.png'}")
    return 0


def results_table(result: dict) -> str:
    ref = result["pytorch_fp32"]
    fp32 = {r["target"]: r for r in result["bundles"] if r["kind"] == "fp32"}
    lines = [f"Fashion-MNIST test split ({result['test_images']} images), each bundle run in its own runtime. FP32: "
             f"{result['train_images']} training images × {result['epochs_fp32']} epochs; QAT: NNCF, "
             f"{result['qat_epochs']} epoch(s). CNN: {result['parameters']} parameters. Latency: p50 of batch 1, "
             f"1 thread, on {result['machine']['cpu']} ({result['machine']['cores']} shared cores).", "",
             "| target | runtime | kind | accuracy % | Δ vs target FP32 | size bytes | × FP32 bytes | p50 ms | "
             "× FP32 p50 | BatchNorm source → artefact |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
             f"| (reference) | {ref['runtime']} | fp32 | {ref['accuracy']:.2f} | – | – | – | {ref['p50_ms']:.3f} | "
             f"– | – |"]
    order = {"fp32": 0, "ptq": 1, "qat": 2}
    for r in sorted(result["bundles"], key=lambda r: (r["target"], order[r["kind"]])):
        delta = f"{r['accuracy'] - fp32[r['target']]['accuracy']:+.2f}" if r["kind"] != "fp32" else "–"
        lines.append(f"| {r['target']} | {r['runtime']} | {r['kind']} | {r['accuracy']:.2f} | {delta} | "
                     f"{r['size_bytes']} | {r['size_vs_fp32']:.3f} | {r['p50_ms']:.3f} | {r['p50_vs_fp32']:.2f} | "
                     f"{r['batchnorm_in_source']} → {r['batchnorm_in_artefact']} |")
    met = result["goals"]["met"]
    lines += ["", "Goals: " + "; ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()) + " (details in "
              "results.json `goals`).", ""]
    for f in result.get("export_failures", []):
        lines.append(f"**Failed:** {f['target']} {f['kind']} INT8 — {f['error']}")
    if result.get("targets_skipped"):
        lines.append("Not built: " + "; ".join(f"{k}: {v}" for k, v in result["targets_skipped"].items()) + ".")
    lines.append("Jetson bundles run here on ONNX Runtime's CPU provider (the Q/DQ graph TensorRT builds from), so "
                 "their latency is not a Jetson number.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"fp32": "o", "ptq": "s", "qat": "^"}
    targets = sorted({r["target"] for r in result["bundles"]})
    colors = dict(zip(targets, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    for r in result["bundles"]:
        ax.scatter(r["p50_ms"], r["accuracy"], marker=markers[r["kind"]], color=colors[r["target"]], s=60)
        bx.scatter(r["size_bytes"] / 1e3, r["accuracy"], marker=markers[r["kind"]], color=colors[r["target"]], s=60)
    ref = result["pytorch_fp32"]
    ax.scatter(ref["p50_ms"], ref["accuracy"], marker="*", color="black", s=120)
    for a in (ax, bx):
        a.axhline(ref["accuracy"] - 0.5, color="grey", linestyle=":", linewidth=1)
        a.grid(True, which="both", alpha=0.3)
        a.set_ylabel(f"test accuracy (%), {result['test_images']} images")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1, 1 thread (ms, log scale)")
    bx.set_xlabel("artefact size (kB)")
    handles = [plt.Line2D([], [], color=colors[t], marker="o", linestyle="", label=t) for t in targets]
    handles += [plt.Line2D([], [], color="grey", marker=m, linestyle="", label=k) for k, m in markers.items()]
    handles += [plt.Line2D([], [], color="black", marker="*", linestyle="", label="PyTorch FP32"),
                plt.Line2D([], [], color="grey", linestyle=":", label="FP32 − 0.5 points")]
    bx.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("MobileNet-style CNN on Fashion-MNIST: FP32 vs PTQ vs QAT INT8 per target")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict:
    from edgesdk.runtime.bench import machine_summary

    return machine_summary()


def versions() -> dict:
    from importlib import metadata

    return {n: metadata.version(n) for n in ("torch", "nncf", "onnxruntime", "openvino", "onnx")}


if __name__ == "__main__":
    sys.exit(main())
