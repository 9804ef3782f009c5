"""export(): the pipeline source → frontend → graph passes → quantization → backend → verify → bundle.

Everything a target needs is decided by its profile; the calibration set and the FP32 reference outputs are made
once and shared by every target and precision in the call. Every artefact is run by the on-device runner in its
real runtime and compared with FP32 before its bundle is written; a miss goes to the fallback loop or fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import outdir
from .version import __version__
from .backends import Artefact, Backend, ConvertContext, backend
from .bundle import discard, finalize, staging_dir
from .errors import EdgeSDKError, InputError, ModelSourceError
from .evaluate import Fidelity, LabelledSet, accuracy, check_labels, fidelity, read_labelled
from .families import FamilyInputs, InputData
from .frontends import SourceModel, SourceOptions, load_source
from .graph import PASSES, optimize
from .profiles import TargetProfile, load_profile
from .quant import CalibrationSet, QuantOverrides, QuantSpec, TextSet
from .quant.spec import QUANT_MODES as QUANT_MODES_ALL
from .quant.fallback import FallbackResult, run_with_fallback
from .runtime import manifest as mf
from .runtime.manifest import open_bundle, sha256_file
from .runtime.runner import Runner
from .runtime.schema import decode, encode
from .runtime.text import output_vectors

log = logging.getLogger("edgesdk")
FP32_COSINE_FLOOR = 0.9999
SENSITIVITY_SAMPLES = 64
TOOLS = ("edgesdk", "torch", "transformers", "tokenizers", "onnx", "onnxslim", "numpy")  # + each backend's own
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportOptions:
    targets: tuple[str, ...] = ("intel", "onnxruntime")
    model: str | None = None  # None = the bundled all-MiniLM-L6-v2
    tokenizer: str | None = None
    out: str = "dist"
    precisions: tuple[str, ...] | None = None  # None = each profile's default_precisions
    calibration: str | None = None  # a text file; None = the packaged calibration set
    fidelity_data: str | None = None  # a text file; None = the packaged held-out set
    fidelity_samples: int = 512
    eval_data: str | None = None  # classifiers: TSV text<TAB>label; each bundle's accuracy, run in its runtime
    quant: QuantOverrides = field(default_factory=QuantOverrides)
    passes: tuple[str, ...] = PASSES
    progress: bool = True
    device: tuple[tuple[str, Any], ...] = ()  # [device] overrides (field, value), e.g. from a backend's CLI flags
    source: SourceOptions = field(default_factory=SourceOptions)  # input shapes, task, preprocessing, weights...


@dataclass
class BundleSummary:
    path: str
    target: str
    backend: str
    precision: str
    size_bytes: int
    fidelity: dict[str, Any]
    kept_in_float: list[dict[str, Any]]
    seconds: float
    evaluation: dict[str, Any] | None = None
    mode_choice: dict[str, Any] | None = None  # INT8 modes built and timed on a CPU without int8 dot product


@dataclass
class ExportResult:
    bundles: list[BundleSummary]
    calibration_builds: int
    report: dict[str, Any]


@dataclass
class _Shared:
    """What the pipeline makes once per call and every target reuses."""

    source: SourceModel
    onnx_path: Path
    inputs: FamilyInputs  # the family's feeds: held-out, calibration and golden items and how to encode them
    heldout_feeds: list[dict[str, np.ndarray]]
    reference: np.ndarray
    graph_report: dict[str, Any]
    calibration: CalibrationSet | None = None
    calibration_builds: int = 0
    references: dict[tuple, tuple[list, np.ndarray]] = field(default_factory=dict)  # per tokenization
    calibration_samples: int = 0
    eval_set: LabelledSet | None = None
    memory_plans: dict[str, mf.MemoryPlan | None] = field(default_factory=dict)  # per profile
    cache: dict[Any, Any] = field(default_factory=dict)  # backends' in-memory results across fallback builds
    work: Path | None = None


def export(options: ExportOptions) -> ExportResult:
    plans = _plan(options)
    opset = min([o for o in (getattr(p.device, "opset", None) for p, _, _ in plans) if o] or [DEFAULT_OPSET])
    outdir.prepare(options.out, options.model, len(plans))  # --out usable, room enough, stale leftovers removed
    with tempfile.TemporaryDirectory(prefix="edgesdk-") as tmp, progress_bars(options.progress):
        outdir.claim(Path(tmp))  # a killed export's work folder is recognisable as stale by the next one
        shared = _prepare(options, Path(tmp), opset)
        for profile, _, _ in plans:
            backend(profile.backend).check_family(shared.source.family.NAME, profile.name)
        if (shared.source.training or {}).get("kind") == "qat":
            # the QAT weights sit on their int8 grid; SmoothQuant's rescaling would move them off it
            plans = [(p, prec, replace(s, smooth_quant=False) if s else None) for p, prec, s in plans]
        shared.calibration_samples = max([s.samples for _, _, s in plans if s] or [0])
        summaries = []
        for profile, precision, spec in plans:
            if spec is not None and spec.mode == "static":
                _ensure_calibration(options, shared)
            summaries.append(_export_one(options, shared, profile, precision, spec))
    return ExportResult(summaries, shared.calibration_builds, {"graph": shared.graph_report})


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """Calibration progress bars are NNCF's (rich); progress=False silences rich's console for the export."""
    try:
        import rich
    except ImportError:
        yield
        return
    console = rich.get_console()
    quiet = console.quiet
    console.quiet = quiet or not enabled
    try:
        yield
    finally:
        console.quiet = quiet


def _plan(options: ExportOptions) -> list[tuple[TargetProfile, str, QuantSpec | None]]:
    """Every (profile, precision, spec) to build, checked before any heavy work starts."""
    if not options.targets:
        raise InputError("no target given; pass --target NAME (see `edgesdk targets`).")
    plans = []
    used: set[str] = set()
    for name in options.targets:
        profile = _with_device_overrides(load_profile(name), options.device, used)
        exporter = backend(profile.backend)
        if exporter.from_torch and options.model and Path(options.model).suffix == ".onnx":
            raise ModelSourceError(f"target '{profile.name}' ({exporter.name}) converts from the PyTorch module; "
                                   f"'{options.model}' is an ONNX file. Pass the Hugging Face model folder "
                                   "(--model DIR), or drop that target.")
        precisions = options.precisions or profile.default_precisions
        for precision in precisions:
            if precision not in profile.precisions:
                raise InputError(f"target '{profile.name}' does not accept precision '{precision}'; "
                                 f"it accepts {', '.join(profile.precisions)}.")
            spec = QuantSpec.from_profile(profile, options.quant) if precision == "int8" else None
            if spec is not None:
                exporter.check_spec(spec, profile.name)
            plans.append((profile, precision, spec))
    unused = sorted({k for k, _ in options.device} - used)
    if unused:
        raise InputError(f"device setting '{unused[0]}' applies to none of the targets ({', '.join(options.targets)}); "
                         "drop the flag or add a target whose backend has it (see `edgesdk export --help`).")
    return plans


def _with_device_overrides(profile: TargetProfile, overrides, used: set[str]) -> TargetProfile:
    """The profile with the [device] fields its backend knows replaced, validated by the backend's own type."""
    from dataclasses import fields as dc_fields

    from .errors import ProfileError

    known = {f.name for f in dc_fields(profile.device)}
    mine = {k: v for k, v in overrides if k in known}
    if not mine:
        return profile
    used.update(mine)
    device = decode(type(profile.device), dict(encode(profile.device), **mine), ProfileError, "device",
                    f"target '{profile.name}': ")
    return replace(profile, device=device)


def _prepare(options: ExportOptions, work: Path, opset: int = DEFAULT_OPSET) -> _Shared:
    started = time.perf_counter()
    source = load_source(options.model, work, options.tokenizer, opset=opset, options=options.source)
    log.info("model %s (%s %s) → FP32 ONNX in %.1fs", source.name, source.family.NAME, source.task,
             time.perf_counter() - started)
    inputs = source.family.export_inputs(source, InputData(options.calibration, options.fidelity_data,
                                                           options.fidelity_samples))
    feeds = inputs.batches(inputs.heldout)
    optimised = work / "optimised_fp32.onnx"
    report = optimize(source.onnx_path, optimised, feeds[0], options.passes)
    log.info("graph passes: %d → %d nodes", sum(report.ops_before.values()), sum(report.ops_after.values()))
    reference = np.concatenate([_pool(source, f, source.reference(f)) for f in feeds])
    shared = _Shared(source, optimised, inputs, feeds, reference, report.to_dict(), work=work)
    if source.opset:
        shared.graph_report["opset"] = source.opset
    if source.source_ops:
        shared.graph_report["source_modules"] = source.source_ops
    if options.eval_data:
        shared.eval_set = _eval_set(options.eval_data, source)
    return shared


def _eval_set(path: str, source: SourceModel) -> LabelledSet:
    if source.task != "classification":
        raise InputError(f"--eval-data measures classification accuracy, but '{source.source}' has no "
                         "classification head (task: embedding). Drop --eval-data, or export a classifier.")
    if source.family.NAME == "image":
        from .families.image import labelled_images

        data = labelled_images(path)
    elif source.family.NAME == "text":
        data = read_labelled(path)
    else:
        raise InputError("--eval-data measures text or image classifiers; a tensor model has no labelled-data "
                         "format. Drop --eval-data and check accuracy with edgesdk.runtime.load(BUNDLE).run().")
    check_labels(data.labels, source.labels)
    return data


def _pool(source: SourceModel, feeds: dict[str, np.ndarray], raw: np.ndarray) -> np.ndarray:
    """The vectors fidelity compares, as the runner makes them (Runner.postprocess)."""
    return output_vectors(source.family.NAME, feeds, raw, source.pooling, source.normalize)


def _ensure_calibration(options: ExportOptions, shared: _Shared) -> CalibrationSet:
    """The one calibration set of this export, built on first need (static PTQ, or a sensitivity probe)."""
    if shared.calibration is None:
        shared.calibration = _calibration_set(options, shared, shared.calibration_samples)
        shared.calibration_builds += 1
    return shared.calibration


def _calibration_set(options: ExportOptions, shared: _Shared, samples: int) -> CalibrationSet:
    items, where = shared.inputs.calibration_items(samples)
    calib = CalibrationSet.build(TextSet(tuple(items), where), shared.inputs.encode, len(items),
                                 model_type=shared.source.family.NNCF_MODEL_TYPE)
    log.info("calibration set built once: %d samples from %s, shared by every target", len(calib), where)
    return calib


def _export_one(options: ExportOptions, shared: _Shared, profile: TargetProfile, precision: str,
                spec: QuantSpec | None) -> BundleSummary:
    started = time.perf_counter()
    name = f"{shared.source.name}-{profile.name}-{precision}".lower()
    final = Path(options.out) / name
    exporter = backend(profile.backend)
    memory = _memory_plan(profile, shared)
    measured: dict[str, Fidelity] = {}  # artefact sha256 → fidelity: a retry that changed nothing is not re-run

    def build(keep_float: tuple[str, ...], spec: QuantSpec | None = spec) -> tuple[_Staged, Artefact, Fidelity]:
        staging = staging_dir(final)
        runner = None
        try:
            ctx = ConvertContext(shared.source, shared.onnx_path, staging, precision,
                                 spec or QuantSpec.from_profile(profile), shared.calibration, profile, keep_float,
                                 work_dir=shared.work, cache=shared.cache)
            artefact = exporter.convert(ctx)
            shared.inputs.payload(staging)
            manifest = _manifest(shared, profile, exporter, precision, spec, artefact, memory)
            runner = Runner(open_bundle(staging, manifest), threads=MEASURE_THREADS)  # the one Runner of this build
            digest = ":".join(sha256_file(staging / f) for f in artefact.files)
            if digest not in measured:
                measured[digest] = _measure(runner, shared)
            else:
                log.info("  the rebuilt artefact is byte-identical to an earlier attempt: its fidelity is reused")
            return _Staged(staging, runner, manifest), artefact, measured[digest]
        except BaseException:
            if runner is not None:
                runner.close()
            discard(staging)
            raise

    log.info("%s: building %s %s", name, profile.backend, precision)
    if spec is None:
        staged, artefact, fid = build(())
        outcome = FallbackResult(staged, artefact, fid, kept_in_float=[], attempts=[fid.to_dict()])
        if fid.cosine_min < FP32_COSINE_FLOOR:
            staged.discard()
            raise EdgeSDKError(f"{name}: the {precision} artefact differs from the PyTorch reference (cosine min "
                               f"{fid.cosine_min:.6f} < {FP32_COSINE_FLOOR}); the conversion is wrong, not lossy.")
    else:
        outcome, choice = _choose_mode(options, shared, profile, spec, build)
        if choice:
            outcome.artefact.decisions["mode_choice"] = choice
    staged: _Staged = outcome.staging
    try:
        golden = _write_golden(staged, shared)
        evaluation = _evaluate(staged.runner, shared.eval_set, options.eval_data) if shared.eval_set else None
        staged.runner.close()
        manifest = replace(
            staged.manifest, golden=golden, evaluation=evaluation,
            fidelity=decode(mf.FidelityInfo, dict(outcome.fidelity.to_dict(), budget=_budget(profile),
                                                  attempts=outcome.attempts), EdgeSDKError, "fidelity"),
            quantization=replace(staged.manifest.quantization, decisions=outcome.artefact.decisions,
                                 kept_in_float=tuple(
                mf.KeptLayer(k["node"], int(k["rank"]), float(k["added_error"]), str(k["reason"]))
                for k in outcome.kept_in_float)))
        _write_report(staged.path, shared, outcome, time.perf_counter() - started)
        finalize(staged.path, final, manifest)
    except BaseException:  # interrupted or failed: no half-written bundle stays behind
        staged.discard()
        raise
    size = sum((final / f).stat().st_size for f in outcome.artefact.files)
    return BundleSummary(str(final), profile.name, profile.backend, precision, size, outcome.fidelity.to_dict(),
                         outcome.kept_in_float, round(time.perf_counter() - started, 1),
                         encode(manifest.evaluation) if manifest.evaluation is not None else None,
                         outcome.artefact.decisions.get("mode_choice"))


def _choose_mode(options: ExportOptions, shared: _Shared, profile: TargetProfile, spec: QuantSpec, build
                 ) -> tuple[FallbackResult, dict[str, Any] | None]:
    """The INT8 build: the profile's mode through the fallback loop; on a CPU without int8 dot-product instructions
    also the profile's `without_int8_dot` modes, timed side by side in their runtime, keeping the fastest that meets
    the fidelity budget. An explicit --quant-mode is never second-guessed."""
    from functools import partial

    from .errors import FidelityError
    from .runtime.bench import cpu_features

    candidates = [spec]
    cpu = cpu_features()
    if options.quant.mode is None and profile.quant.without_int8_dot and not cpu["int8_dot_product"]:
        allowed = backend(profile.backend).spec.get("mode", QUANT_MODES_ALL)
        candidates += [replace(spec, mode=m) for m in profile.quant.without_int8_dot if m != spec.mode and m in allowed]
    built, failed = [], []
    for candidate in candidates:
        if candidate.mode == "static":  # an alternative may be the first static build of this export
            _ensure_calibration(options, shared)
        try:
            built.append((candidate, run_with_fallback(
                partial(build, spec=candidate), profile,
                lambda c=candidate: _rank(_ensure_calibration(options, shared), shared, c),
                lambda staged: staged.discard())))
        except FidelityError as exc:
            if len(candidates) == 1:
                raise
            failed.append({"mode": candidate.mode, "failed": str(exc)[:300]})
            log.info("  mode %s missed the budget: %s", candidate.mode, exc)
    if not built:
        raise FidelityError(f"target '{profile.name}': no INT8 mode met the fidelity budget ("
                            + "; ".join(f"{f['mode']}: {f['failed']}" for f in failed) + ")")
    if len(candidates) == 1:
        return built[0][1], None
    p50 = _time_side_by_side([outcome.staging.runner for _, outcome in built], shared)
    best = min(range(len(built)), key=lambda i: p50[i])
    for i, (_, outcome) in enumerate(built):
        if i != best:
            outcome.staging.discard()
    chosen = built[best][0].mode
    rows = [{"mode": c.mode, "p50_ms": round(t, 3), "fidelity": o.fidelity.describe()}
            for (c, o), t in zip(built, p50)]
    why = (f"{cpu['model']} has no int8 dot-product instructions (VNNI/AMX/dotprod), so static int8 may be no faster "
           f"than fp32: {', '.join(c.mode for c in candidates)} were built and timed here (batch 1, interleaved); "
           f"{chosen} was fastest within the budget")
    log.info("  mode choice: %s (%s)", chosen, ", ".join(f"{r['mode']} {r['p50_ms']} ms" for r in rows))
    return built[best][1], {"chosen": chosen, "candidates": rows + failed, "why": why,
                            "measured_on": cpu["model"], "threads": MEASURE_THREADS,
                            "note": "timed on the export machine: pass --quant-mode "
                            "when the device's CPU differs"}


def _time_side_by_side(runners: list[Runner], shared: _Shared, rounds: int = 20) -> list[float]:
    """p50 ms of each runner on the same batch-1 feed (the bench text at 128 tokens, or the family's first golden
    item), round-robin so drift hits all alike, on the export's MEASURE_THREADS."""
    from .runtime.bench import BenchConfig, feeds_for, run_interleaved, timer

    feeds = []
    for runner in runners:
        tok = runner.manifest.tokenizer
        feeds.append(feeds_for(runner, 1, min(128, tok.max_length)) if tok else
                     shared.inputs.encode(shared.inputs.golden[:1]))
    samples: list[list[float]] = [[] for _ in runners]
    run_interleaved([timer(r.run, f) for r, f in zip(runners, feeds)], samples,
                    BenchConfig(warmup=3, iterations=rounds))
    return [float(np.median(s)) for s in samples]


# The export measures every build (fidelity at each length, golden I/O, the mode choice's timings) on all of this
# machine's cores: a runtime whose default is one thread (LiteRT) spent most of an android export there.
MEASURE_THREADS = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


@dataclass
class _Staged:
    """A build in its staging folder, with the one Runner that measures, records golden I/O and evaluates it."""

    path: Path
    runner: Runner
    manifest: mf.Manifest

    def discard(self) -> None:
        self.runner.close()
        discard(self.path)


def _memory_plan(profile: TargetProfile, shared: _Shared) -> mf.MemoryPlan | None:
    """The memory stage every target gets: weights + activations per precision at the profile's largest shape."""
    if profile.name in shared.memory_plans:
        return shared.memory_plans[profile.name]
    from .memory.estimate import memory_plan

    batch, seq = profile.shapes.planning_shape()
    seq = min(seq, shared.source.max_length) if shared.source.max_length else seq  # image/tensor: no sequence axis
    try:
        estimates = memory_plan(profile, shared.onnx_path, backend(profile.backend).memory, batch, seq)
    except EdgeSDKError as exc:  # a graph the planner cannot bind: the export goes on, the plan says why
        log.info("memory plan skipped for %s: %s", profile.name, exc)
        shared.memory_plans[profile.name] = None
        return None
    mb = 1 << 20
    result = mf.MemoryPlan(
        shape=(batch, seq), budget_mb=profile.memory.budget_mb, shared_with_cpu=profile.memory.shared_with_cpu,
        per_precision={e.precision: mf.MemoryRow(round(e.weights.total / mb, 1), round(e.activations / mb, 1),
                                                 round(e.workspace / mb, 1), round(e.total / mb, 1), e.fits)
                       for e in estimates})
    shared.memory_plans[profile.name] = result
    return result


def _evaluate(runner: Runner, data: LabelledSet, path: str) -> mf.Evaluation:
    """Accuracy of the staged classifier bundle on the eval data, run in its own runtime."""
    started = time.perf_counter()
    result = runner.classify(list(data.texts))
    score = accuracy(result.labels, data.labels, result.label_names)
    log.info("  accuracy %.2f %% on %d rows of %s (%.0fs)", score, len(data.texts), path,
             time.perf_counter() - started)
    return mf.Evaluation(metric="accuracy", value=float(score), rows=len(data.texts), data=str(path))


def _rank(calibration: CalibrationSet, shared: _Shared, spec: QuantSpec) -> list:
    """Measured per-layer sensitivity, from a quantized probe of the same spec and mode (static QDQ by NNCF,
    or ORT's dynamic quantization) run beside FP32 in ONNX Runtime."""
    from .quant.sensitivity import build_probe, rank_layers

    probe = shared.onnx_path.with_name(f"sensitivity_probe_{spec.mode}.onnx")
    if not probe.exists():
        build_probe(shared.onnx_path, probe, spec, calibration)
    return rank_layers(shared.onnx_path, probe, list(calibration)[:SENSITIVITY_SAMPLES])


def _budget(profile: TargetProfile) -> dict[str, float]:
    return {"cosine_mean": profile.fidelity.cosine_mean, "cosine_min": profile.fidelity.cosine_min,
            "top1_agreement_min": profile.fidelity.top1_agreement_min}


def _manifest(shared: _Shared, profile: TargetProfile, exporter: Backend, precision: str, spec: QuantSpec | None,
              artefact: Artefact, memory: mf.MemoryPlan | None) -> mf.Manifest:
    """The bundle's manifest, built once from typed parts; results (fidelity, golden, evaluation) are added with
    dataclasses.replace before it is sealed."""
    src = shared.source
    sections = dict(shared.inputs.sections)
    if "tokenizer" in sections:
        tokenizer = dict(sections["tokenizer"], **artefact.tokenizer)
        if not tokenizer.get("static_length"):
            tokenizer["max_length"] = min(tokenizer["max_length"], profile.shapes.max_seq)
        sections["tokenizer"] = tokenizer
    data = {
        "format_version": mf.FORMAT_VERSION,
        "edgesdk_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": src.name, "source": src.source, "task": src.task, "family": src.family.NAME,
                  "pooling": src.pooling,
                  "normalize": src.normalize, "labels": src.labels, "training": _training_summary(src),
                  "prompts": src.prompts, "default_prompt_name": src.default_prompt_name,
                  "similarity_fn_name": src.similarity_fn_name},
        "target": {"name": profile.name, "profile_sha256": profile.content_sha256, "backend": profile.backend,
                   "description": profile.description, "settings": artefact.settings},
        "precision": precision,
        "quantization": {"spec": spec.to_dict() if spec else None, "decisions": artefact.decisions,
                         "qat": (src.training or {}).get("qat") if spec else None},
        "artefact": {"format": artefact.format, "entry": artefact.entry, "files": artefact.files},
        "inputs": artefact.inputs,
        "outputs": artefact.outputs,
        **sections,
        "versions": _versions(exporter),
        "runtime_requirements": ["numpy", *{"text": ["tokenizers"], "image": ["pillow"]}.get(src.family.NAME, []),
                                 *artefact.runtime_requirements],
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    manifest = decode(mf.Manifest, _plain(data), EdgeSDKError, context=f"the {profile.name} {precision} manifest: ")
    return replace(manifest, memory_plan=memory)


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python ones: the JSON the manifest decoder checks."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _training_summary(source: SourceModel) -> dict[str, Any] | None:
    """What edgesdk trained this model on (kind, data, steps, settings), from its edgesdk_training.json."""
    if not source.training:
        return None
    return {k: source.training.get(k) for k in ("kind", "base", "labels", "data", "training")}


def _measure(runner: Runner, shared: _Shared) -> Fidelity:
    """Run the staged artefact through the on-device runner (its real runtime) and compare with FP32.

    An artefact compiled for fixed sequence lengths is measured at each of them, on the held-out texts that fit it
    (what the runner sends there); its fidelity is the worst length's, with every length's in `per_length`.
    """
    out = runner.outputs[0].name
    reference_name = f"{shared.source.name} FP32 PyTorch" if shared.source.torch_module else "FP32 ONNX Runtime"
    classification = shared.source.task == "classification"
    results = {}
    for length, (feeds, reference) in _heldout_for(runner, shared).items():
        got = np.concatenate([_pool(shared.source, f, runner.run(f)[out]) for f in feeds])
        results[length] = fidelity(got, reference, reference_name, classification=classification)
    if not results:
        raise EdgeSDKError("no held-out text could be run through this artefact; pass --fidelity-data with texts.")
    if list(results) == [None]:
        return results[None]
    worst = min(results.values(), key=lambda f: f.rank())
    return replace(worst, per_length={str(k): dict(v.to_dict(), per_length=None) for k, v in results.items()})


def _heldout_for(runner: Runner, shared: _Shared) -> dict[int | None, tuple[list[dict[str, np.ndarray]], np.ndarray]]:
    """Held-out feeds as this bundle tokenizes them, with the FP32 reference for exactly those feeds, per length.

    Bundles that tokenize like the source share the feeds made once (key None); one with a shorter max length or a
    static length pads and truncates differently, and one compiled for fixed lengths gets the texts that fit each
    length padded to it: those feeds and references are made once per tokenization and length.
    """
    tok = runner.manifest.tokenizer
    lengths = runner.static_lengths
    if tok is None or not lengths and (tok.static_length, tok.max_length) == (
            None, shared.inputs.sections["tokenizer"]["max_length"]):
        return {None: (shared.heldout_feeds, shared.reference)}
    texts = shared.inputs.heldout
    found = {}
    for length in lengths or (None,):
        key = (tok.static_length, tok.max_length, length)
        if key not in shared.references:
            if length is None:
                feeds = [runner.tokenize(texts[i:i + 16]) for i in range(0, len(texts), 16)]
            else:
                sizes = runner.tokenize(texts)["attention_mask"].sum(axis=1)
                fit = [t for t, n in zip(texts, sizes) if n <= length]
                feeds = [runner.tokenize(fit[i:i + 16], pad_to=length) for i in range(0, len(fit), 16)]
            if not feeds:
                log.info("  no held-out text fits length %s: that length is checked by golden I/O only", length)
                continue
            reference = np.concatenate([_pool(shared.source, f, shared.source.reference(f)) for f in feeds])
            shared.references[key] = (feeds, reference)
        found[length] = shared.references[key]
    return found


def _write_golden(staged: _Staged, shared: _Shared) -> mf.GoldenInfo:
    golden = staged.path / "golden"
    golden.mkdir(exist_ok=True)
    runner = staged.runner
    out = runner.outputs[0].name
    items = shared.inputs.golden

    def record(feeds: dict[str, np.ndarray], stem: str) -> None:
        artefact = _pool(shared.source, feeds, runner.run(feeds)[out])
        reference = _pool(shared.source, feeds, shared.source.reference(feeds))
        np.savez(golden / f"inputs{stem}.npz", **feeds)
        np.savez(golden / f"expected{stem}.npz", artefact=artefact, reference=reference)

    if runner.manifest.tokenizer is None:  # image and tensor models: the family's own feeds
        record(shared.inputs.encode(items), "")
        return mf.GoldenInfo(inputs="golden/inputs.npz", expected="golden/expected.npz")
    record(runner.tokenize(items), "")
    cases = []
    sizes = runner.tokenize(items)["attention_mask"].sum(axis=1)
    for batch, length in [(1, n) for n in runner.static_lengths] + list(runner.static_batches):
        fit = [t for t, n in zip(items, sizes) if n <= length]
        if fit:  # a batched signature gets exactly `batch` rows (the texts that fit, repeated) so it is the one run
            stem = f"-L{length}" if batch == 1 else f"-B{batch}-L{length}"
            record(runner.tokenize(fit if batch == 1 else [fit[i % len(fit)] for i in range(batch)], pad_to=length),
                   stem)
            cases.append(mf.GoldenCase(length, f"golden/inputs{stem}.npz", f"golden/expected{stem}.npz", batch))
    (golden / "texts.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    return mf.GoldenInfo(inputs="golden/inputs.npz", expected="golden/expected.npz", texts="golden/texts.txt",
                         per_length=tuple(cases))


def _write_report(staging: Path, shared: _Shared, outcome: FallbackResult, seconds: float) -> None:
    import json

    report = {"graph_passes": shared.graph_report, "quantization": outcome.artefact.decisions,
              "fallback_attempts": outcome.attempts, "kept_in_float": outcome.kept_in_float,
              "calibration": {"samples": len(shared.calibration) if shared.calibration else 0,
                              "source": shared.calibration.texts.source if shared.calibration else None,
                              "builds_in_this_export": shared.calibration_builds},
              "fidelity_data": {"source": shared.inputs.heldout_source, "items": len(shared.inputs.heldout),
                                "notes": shared.inputs.notes},
              "export_seconds": round(seconds, 2)}
    (staging / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


def _versions(exporter: Backend) -> dict[str, str]:
    found = {}
    for tool in dict.fromkeys((*TOOLS, *exporter.tools)):
        try:
            found[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            continue
    return found
