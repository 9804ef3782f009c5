"""Apache TVM backend (Relax, CPU via LLVM): the optimised FP32 ONNX → one compiled shared library + its weights.

Relax cannot import this graph with dynamic axes (the attention-mask Expand of BERT fails in `from_onnx`), so the
library holds one function per **sequence bucket** (`buckets` of the [device] table, clamped to the model's and the
profile's max length), batch fixed at `batch`; the runtime pads a feed up to the smallest bucket that fits, with
mask 0 on the padding, and slices the outputs back. Each bucket's graph is made static by onnxslim on a weight-less
skeleton of the ONNX (the weights become graph inputs), so every function takes the same weights, stored once in
`weights.npz`, and slimming does not constant-fold 90 MB of tensors per bucket.

Untuned TVM code is ~100x slower than ONNX Runtime on CPU; `--tune-trials N` runs MetaSchedule over every bucket's
kernels with that trial budget. The tuning database goes into the bundle (`tuning/`) and into a cache next to the
bundles (`OUT/tvm-tuning/<graph sha256 + target + buckets>/`), which a later export of the same graph reuses.

Cross-compiled targets (an `mtriple` that is not this machine's) cannot run here: the bundle then also carries a
twin library of the same Relax module compiled for this machine (`host/`), which the export's verification and
`edgesdk verify` on this machine run; the manifest settings say the device library itself is unverified.
Precisions: fp32; fp16 (ToMixedPrecision: fp16 compute, fp32 accumulation, the same fp32 weights file), which
untuned runs 2.3x faster than untuned fp32 here; static INT8 as NNCF's QDQ graph, which Relax imports as
quantize/dequantize ops around float MatMuls: a quarter of the weight bytes, no faster (measured, see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgeSDKError, QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from . import Artefact, Backend, BackendOption, ConvertContext, onnx_io_specs

log = logging.getLogger("edgesdk")
MB = 1 << 20
LIBRARY = "model.so"
HOST_LIBRARY = "host/model-host.so"
WEIGHTS = "weights.npz"
TUNING = ("tuning/database_workload.json", "tuning/database_tuning_record.json")
WEIGHT_INPUT_MIN_ELEMS = 1024  # initializers this large become function parameters (the shared weights)
TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}


@dataclass(frozen=True)
class TVMDevice:
    """[device] of a tvm profile: the LLVM target and the compiled shapes."""

    device: str = "CPU"
    mtriple: str = field(default="", metadata=check(pattern=r"|[a-z0-9_]+-[a-z0-9_-]+"))  # "" = this machine
    mcpu: str = field(default="", metadata=check(pattern=r"[a-z0-9_.+-]*"))  # "" = this machine's CPU
    mattr: tuple[str, ...] = field(default=(), metadata=check(pattern=r"[+-][a-z0-9_.]+"))
    cc: str = field(default="", metadata=check(pattern=r"[A-Za-z0-9_.+/-]*"))  # linker driver; "" = TVM's default
    buckets: tuple[int, ...] = field(default=(32, 64, 128, 256), metadata=check(min=1, max=8192, nonempty=True))
    batch: int = field(default=1, metadata=check(min=1, max=64))
    tune_trials: int = field(default=0, metadata=check(min=0, max=100_000))  # MetaSchedule trials, 0 = untuned


def machine() -> str:
    name = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def triple_machine(mtriple: str) -> str:
    return mtriple.split("-")[0] if mtriple else machine()


def clamp_buckets(buckets: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Buckets within the model's and profile's max length (longer ones become that length), sorted, unique."""
    return tuple(sorted({min(b, limit) for b in buckets}))


def target_dict(dev: TVMDevice, host: bool = False) -> dict:
    tvm = require("tvm", "tvm")
    cross = bool(dev.mtriple) and triple_machine(dev.mtriple) != machine()
    target = {"kind": "llvm"}
    if host or not cross:
        target["mcpu"] = dev.mcpu if dev.mcpu and not cross else tvm.target.codegen.llvm_get_system_cpu()
        if not host and dev.mtriple:
            target["mtriple"] = dev.mtriple
    else:
        target.update(mtriple=dev.mtriple, **({"mcpu": dev.mcpu} if dev.mcpu else {}))
    if dev.mattr and not (host and cross):
        target["mattr"] = list(dev.mattr)
    target["num-cores"] = os.cpu_count() or 1  # MetaSchedule sizes its parallel loops by it
    return target


def convert(ctx: ConvertContext) -> Artefact:
    if ctx.precision not in ("fp32", "fp16", "int8"):
        raise QuantizationError(f"the tvm backend builds fp32, fp16 and int8, not {ctx.precision}.")
    onnx = require("onnx", "export")
    graph, quant = _qdq(ctx) if ctx.precision == "int8" else (ctx.onnx_path, {})
    dev: TVMDevice = ctx.profile.device
    limit = min(ctx.profile.shapes.max_seq, ctx.source.max_length)
    buckets = clamp_buckets(dev.buckets, limit)
    started = time.perf_counter()
    mod, weights, inputs = relax_module(ctx, graph, buckets, dev.batch)
    if ctx.precision == "fp16":  # fp16 compute, fp32 accumulation and outputs; the weights file stays fp32
        tvm = require("tvm", "tvm")
        mod = tvm.relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
        quant = {"call": "tvm.relax.transform.ToMixedPrecision", "out_dtype": "float32"}
    imported = time.perf_counter() - started
    cross = bool(dev.mtriple) and triple_machine(dev.mtriple) != machine()
    target = target_dict(dev)
    graph_sha = _sha256(graph)
    database, tuned, tune_seconds = _tuning(ctx, graph, target, dev, graph_sha, buckets)
    started = time.perf_counter()
    _compile(ctx, mod, target, database, ctx.out_dir / LIBRARY, dev.cc or None, graph_sha, buckets, ctx.precision)
    files = [LIBRARY, WEIGHTS]
    settings = {"library": LIBRARY, "machine": triple_machine(dev.mtriple), "target": json.dumps(target),
                "weights": WEIGHTS, "entries": [f"seq{b}" for b in buckets], "buckets": list(buckets),
                "batch": dev.batch, "inputs": inputs, "tuned_trials": tuned}
    if cross:  # the device library cannot run here: a twin of the same module for this machine verifies it
        host = target_dict(dev, host=True)
        (ctx.out_dir / "host").mkdir(exist_ok=True)
        _compile(ctx, mod, host, database, ctx.out_dir / HOST_LIBRARY, None, graph_sha, buckets, ctx.precision)
        files.append(HOST_LIBRARY)
        settings.update(host_library=HOST_LIBRARY, host_machine=machine(), host_target=json.dumps(host))
    compiled = time.perf_counter() - started
    np.savez(ctx.out_dir / WEIGHTS, **{f"p{i:04d}": w for i, w in enumerate(weights)})
    if database is not None:
        (ctx.out_dir / "tuning").mkdir(exist_ok=True)
        for name in TUNING:
            shutil.copyfile(database / Path(name).name, ctx.out_dir / name)
        files += list(TUNING)
    log.info("tvm: %d bucket(s) %s, import %.1fs, compile %.1fs%s", len(buckets), list(buckets), imported, compiled,
             f", tuning {tune_seconds:.0f}s ({tuned} trials)" if tuned else " (untuned)")
    spec_in, spec_out = onnx_io_specs(onnx.load(str(ctx.onnx_path), load_external_data=False))
    decisions = {**quant, "compiler": "tvm.relax", "buckets": list(buckets), "batch": dev.batch, "target": target,
                 "tune_trials": tuned, "tune_seconds": round(tune_seconds, 1), "import_seconds": round(imported, 1),
                 "compile_seconds": round(compiled, 1), "device_library_verified_here": not cross,
                 "shapes": "one static function per sequence bucket: Relax cannot import the graph with dynamic "
                           "axes (attention-mask Expand)"}
    return Artefact(format="tvm-relax-library", entry=LIBRARY, files=files, inputs=spec_in, outputs=spec_out,
                    settings=settings, decisions=decisions, tokenizer={"max_length": buckets[-1]},
                    runtime_requirements=[f"apache-tvm=={_version()}"])


def relax_module(ctx: ConvertContext, graph: Path, buckets: tuple[int, ...], batch: int):
    """One Relax IRModule with a function `seq<N>` per bucket, the shared weights (in parameter order) and the
    token input names. Cached for the export (the x86 and arm64 profiles import the same graph once)."""
    key = ("tvm-relax", _sha256(graph), buckets, batch)
    if key not in ctx.cache:
        ctx.cache[key] = _import(graph, buckets, batch)
    return ctx.cache[key]


def _qdq(ctx: ConvertContext) -> tuple[Path, dict]:
    """Static INT8 as NNCF's QDQ ONNX (the shared QuantSpec → NNCF mapping), cached for the export by spec and the
    layers kept in float. Relax imports the Q/DQ pairs as quantize/dequantize ops: int8 weights stay int8 in
    weights.npz (a quarter of the bytes), the MatMuls run in float (measured: no faster than FP32)."""
    if ctx.spec.mode != "static":
        raise QuantizationError(f"the tvm target builds static INT8 (QDQ) only, not --quant-mode {ctx.spec.mode}.")
    if ctx.calibration is None:
        raise QuantizationError("static INT8 needs calibration data; none was built.")
    from ..quant.nncf_options import nncf_quantize_onnx

    key = ("tvm-qdq", json.dumps(ctx.spec.to_dict(), sort_keys=True, default=str), ctx.keep_float)
    if key not in ctx.cache:
        folder = (ctx.work_dir or ctx.out_dir.parent) / "tvm-qdq"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.onnx"
        decisions = nncf_quantize_onnx(ctx.onnx_path, path, ctx.spec, ctx.calibration, ctx.keep_float)
        ctx.cache[key] = (path, decisions)
    return ctx.cache[key]


def _import(onnx_path: Path, buckets: tuple[int, ...], batch: int):
    onnx = require("onnx", "export")
    onnxslim = require("onnxslim", "export")
    tvm = require("tvm", "tvm")
    from onnx import helper, numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(onnx_path))
    inputs = [i.name for i in model.graph.input]
    big = [t for t in model.graph.initializer if int(np.prod(t.dims)) >= WEIGHT_INPUT_MIN_ELEMS]
    weights = [numpy_helper.to_array(t) for t in big]
    small = [t for t in model.graph.initializer if int(np.prod(t.dims)) < WEIGHT_INPUT_MIN_ELEMS]
    del model.graph.initializer[:]
    model.graph.initializer.extend(small)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big)
    functions = {}
    for seq in buckets:
        static = onnxslim.slim(model, input_shapes=[f"{n}:{batch},{seq}" for n in inputs])
        order = [i.name for i in static.graph.input]
        if order != inputs + [t.name for t in big]:
            raise EdgeSDKError(f"onnxslim changed the graph inputs of the seq {seq} bucket ({order[:4]}...); "
                               "the buckets would not share one weight order.")
        mod = from_onnx(static, keep_params_in_input=False)
        functions[f"seq{seq}"] = mod["main"].with_attr("global_symbol", f"seq{seq}")
    return tvm.IRModule(functions), weights, inputs


def _compile(ctx: ConvertContext, mod, target: dict, database: Path | None, path: Path, cc: str | None,
             graph_sha: str, buckets: tuple[int, ...], precision: str) -> None:
    """tvm.compile (or MetaSchedule's compile with the tuning database) → export_library; the library is cached for
    the export by graph + target, so two profiles with one target compile once."""
    tvm = require("tvm", "tvm")
    key = ("tvm-lib", graph_sha, precision, json.dumps(target, sort_keys=True), buckets, str(database), cc)
    cached = ctx.cache.get(key)
    if cached is not None and Path(cached).is_file():
        shutil.copyfile(cached, path)
        return
    tgt = tvm.target.Target(target)
    if database is None:
        executable = tvm.compile(mod, tgt)
    else:
        from tvm.s_tir.meta_schedule import database as ms_database
        from tvm.s_tir.meta_schedule.relax_integration import compile_relax

        db = ms_database.JSONDatabase(str(database / "database_workload.json"),
                                      str(database / "database_tuning_record.json"), allow_missing=False)
        executable = compile_relax(db, _legalized(mod, tgt), tgt, None)
    try:
        executable.export_library(str(path), **({"cc": cc} if cc else {}))
    except Exception as exc:  # tvm raises RuntimeError / TVMError from the linker
        raise EdgeSDKError(f"linking the TVM library for {target} failed ({str(exc)[:300]}); a cross target "
                           f"needs its gcc ({cc or 'cc'}) on PATH: bash scripts/setup.sh installs it.") from exc
    if ctx.work_dir is not None:
        keep = ctx.work_dir / "tvm-libs" / hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, keep / path.name)
        ctx.cache[key] = str(keep / path.name)


def _legalized(mod, target):
    """The Relax module lowered to fused TIR kernels: what MetaSchedule tunes and its database matches."""
    tvm = require("tvm", "tvm")
    from tvm.relax.backend.cpu_generic import pipeline

    with target:
        passes = pipeline.library_dispatch_passes(target) + pipeline.legalize_passes(target)
        return tvm.transform.Sequential(passes)(mod)


def _tuning(ctx: ConvertContext, graph: Path, target: dict, dev: TVMDevice, graph_sha: str,
            buckets: tuple[int, ...]):
    """(database folder or None, trials in it, seconds spent now). The cache under OUT/tvm-tuning/ is reused when it
    holds at least the asked trials for this graph, target and buckets; otherwise tuning continues from it."""
    if dev.tune_trials == 0:
        return None, 0, 0.0
    if "mtriple" in target and triple_machine(target["mtriple"]) != machine():
        raise EdgeSDKError(f"target '{ctx.profile.name}' is cross-compiled for {target['mtriple']}: MetaSchedule "
                           f"measures every trial on the device itself, which this {machine()} machine is not. "
                           "Export it untuned (--tune-trials 0), or tune on the board (see the README's TVM section).")
    name = json.dumps({"graph": graph_sha, "target": {k: v for k, v in target.items() if k != "num-cores"},
                       "buckets": buckets, "batch": dev.batch}, sort_keys=True)
    folder = ctx.out_dir.parent / "tvm-tuning" / hashlib.sha256(name.encode()).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "edgesdk-tuning.json"
    done = json.loads(meta.read_text())["trials"] if meta.is_file() else 0
    if done >= dev.tune_trials:
        log.info("tvm: reusing the tuning database %s (%d trials)", folder, done)
        return folder, done, 0.0
    more = dev.tune_trials - done
    log.info("tvm: MetaSchedule tuning, %d trials (%s) into %s", more, "continuing" if done else "new", folder)
    started = time.perf_counter()
    with _progress(folder / "database_tuning_record.json", more, "tvm tuning"):
        _tune_in_child(graph, buckets, dev.batch, target, folder, more)
    seconds = time.perf_counter() - started
    meta.write_text(json.dumps({"trials": dev.tune_trials, "graph_sha256": graph_sha, "target": target,
                                "buckets": list(buckets), "seconds": round(seconds, 1)}), encoding="utf-8")
    return folder, dev.tune_trials, seconds


def _tune_in_child(graph: Path, buckets: tuple[int, ...], batch: int, target: dict, folder: Path,
                   trials: int) -> None:
    """MetaSchedule in a child process that imports the graph itself: tuning is CPU heavy for minutes, and a crash
    inside TVM's C++ must end the tuning, not the export. apache-tvm 0.27.0.post1 segfaults here (Zen 3) in
    TuneContext initialisation (the default LLVM mutators) and, without mutators under replay-trace, when the
    task scheduler initialises its first task: measured on a plain 128x384x384 matmul, so on these machines
    tuning ends in a named error."""
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "import tvm\n"
            "from tvm.s_tir.meta_schedule.relax_integration import tune_relax\n"
            "from edgesdk.backends.tvm import _import, _legalized\n"
            "graph, folder, target, trials, buckets, batch = sys.argv[1:7]\n"
            "mod = _import(Path(graph), tuple(json.loads(buckets)), int(batch))[0]\n"
            "target = tvm.target.Target(json.loads(target))\n"
            "tune_relax(_legalized(mod, target), {}, target, work_dir=folder, max_trials_global=int(trials),\n"
            "           num_trials_per_iter=min(64, max(8, int(trials) // 8)), cost_model=sys.argv[7], seed=0)\n")
    try:
        import xgboost  # noqa: F401
        cost = "xgb"
    except ImportError:  # MetaSchedule's default cost model needs xgboost, which is not a dependency
        cost = "random"
    args = [str(graph), str(folder), json.dumps(target), str(trials), json.dumps(list(buckets)), str(batch), cost]
    done = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace")
    if done.returncode != 0:
        tail = " ".join(line for line in done.stderr.splitlines()[-40:] if "Error" in line or "Segfault" in line)
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
        raise EdgeSDKError(f"MetaSchedule tuning failed ({how}) in apache-tvm {_version()}: "
                           f"{tail[:300] or 'no message'}. Export untuned (--tune-trials 0); the log is in "
                           f"{folder}/logs.")


class _progress:
    """A tqdm bar over the tuning records MetaSchedule appends (one JSON line per measured trial)."""

    def __init__(self, records: Path, total: int, label: str):
        self.records, self.total, self.label = records, total, label
        self.stop = threading.Event()

    def _lines(self) -> int:
        try:
            with self.records.open("rb") as handle:
                return sum(1 for _ in handle)
        except OSError:
            return 0

    def _watch(self) -> None:
        from tqdm import tqdm

        start = self._lines()
        with tqdm(total=self.total, desc=self.label, unit="trial") as bar:
            while not self.stop.wait(1.0):
                bar.n = min(self.total, self._lines() - start)
                bar.refresh()
            bar.n = min(self.total, self._lines() - start)

    def __enter__(self):
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version() -> str:
    from importlib import metadata

    return metadata.version("apache-tvm")


BACKEND = Backend(
    name="tvm", convert=convert, device=TVMDevice, precisions=("fp32", "fp16", "int8"), extra="tvm", requires=("tvm",),
    families=("text",),  # compiled per sequence bucket; image/tensor graphs are not wired yet (no TVM in CI here)
    tools=("apache-tvm", "onnx", "onnxslim", "nncf"), shape_policies=("static",),
    spec={"mode": ("static",), "calibration_method": ("minmax", "percentile", "mse"),
          "weight_granularity": ("per_channel",), "weight_symmetric": (True,), "activation_dtype": ("int8",),
          "activation_symmetric": (True, False), "smooth_quant": (True, False), "float_ops": ("*",)},
    options=(BackendOption("--tune-trials", "tune_trials", int,
                           "tvm targets: MetaSchedule tuning trials (0 = untuned; the database is cached under "
                           "OUT/tvm-tuning/ and reused)"),),
    memory=RuntimeModel("tvm", "offset", False, False, False, 16 * MB, False,
                        "not measured: Relax plans each bucket's activations statically (StaticPlanBlockMemory); "
                        "the weights are held once, shared by every bucket"),
)
