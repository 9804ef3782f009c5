"""plan() and check(): resolve the model to a graph, bind it, size it per precision, and (check) measure it.

`plan(PlanOptions(...))` estimates every precision the target accepts (plus weight-only int4, honestly marked where
the backend has none) against the profile's memory budget and asks the advisor for a strategy. `check(CheckOptions)`
estimates a bundle's own artefact as-is with its runtime's memory model and measures it in a fresh process.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import backend as export_backend
from ..errors import InputError, ModelSourceError
from ..profiles import TargetProfile, load_profile
from ..memory.estimate import PrecisionEstimate, ScaledGraph, estimate
from ..memory.runtime_model import RuntimeModel

MAX_DIM = 1 << 20


@dataclass(frozen=True)
class PlanOptions:
    target: str = "onnxruntime"
    model: str | None = None  # None = the bundled all-MiniLM-L6-v2; or an .onnx, a model folder, a bundle
    batch: int = 1
    seq: int = 128
    precisions: tuple[str, ...] | None = None  # None = the profile's precisions + int4
    trial: bool = False
    trial_samples: int = 64


@dataclass(frozen=True)
class CheckOptions:
    bundle: str
    batch: int = 1
    seq: int = 128
    runs: int = 3
    threads: int = 1


@dataclass(frozen=True)
class ModelGraph:
    """The graph the planner sizes: where it came from and the three probes it was bound at."""

    path: str
    format: str  # onnx | openvino-ir
    scaled: ScaledGraph


@dataclass(frozen=True)
class Plan:
    model: str
    model_format: str
    profile: TargetProfile
    batch: int
    seq: int
    runtime: RuntimeModel
    estimates: tuple[PrecisionEstimate, ...]
    advice: object = None  # advise.Advice
    extra: dict = field(default_factory=dict)


def check_shape(batch: object, seq: object) -> None:
    for name, value in (("batch", batch), ("seq", seq)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > MAX_DIM:
            raise InputError(f"--{name} must be a whole number from 1 to {MAX_DIM}, got {value!r}. "
                             f"Pass e.g. --{name} {1 if name == 'batch' else 128}.")


def plan(options: PlanOptions, trial=None) -> Plan:
    """Estimates and advice for a target; `trial` is a measured PTQ trial (plan/trial.py, run above the export)."""
    check_shape(options.batch, options.seq)
    profile = load_profile(options.target)
    precisions = _precisions(profile, options.precisions)
    with tempfile.TemporaryDirectory(prefix="edgesdk-plan-") as tmp:
        graph = load_graph(options.model, options.batch, options.seq, Path(tmp))
    rt = export_backend(profile.backend).memory
    estimates = tuple(estimate(graph.scaled, profile, rt, p, options.batch, options.seq) for p in precisions)
    from .advise import advise

    return Plan(graph.path, graph.format, profile, options.batch, options.seq, rt, estimates,
                advise(profile, estimates, trial))


def _precisions(profile: TargetProfile, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    allowed = (*profile.precisions, "int4")
    if asked is None:
        return tuple(p for p in ("fp32", "fp16", "int8", "int4") if p in allowed)
    bad = [p for p in asked if p not in allowed]
    if bad:
        raise InputError(f"precision {bad} is not accepted by target '{profile.name}'; it accepts "
                         f"{', '.join(allowed)} (int4 = weight-only, planned where the backend supports it).")
    return asked


def load_graph(model: str | None, batch: int, seq: int, work: Path) -> ModelGraph:
    """Bind the model at (b, s), (2b, s) and (b, s/2) — below s, so a position table of exactly s still binds;
    see estimate.ScaledGraph."""
    path, fmt = resolve_model(model, work)
    if fmt == "openvino-ir":
        from ..memory.ov_graph import bind_ir as binder

        source = path
    else:
        from ..memory.onnx_graph import bind, load_model

        source = load_model(path)
        binder = bind
    probes = [binder(source, b, s) for b, s in ((batch, seq), (2 * batch, seq), (batch, seq // 2 if seq > 1 else 2))]
    return ModelGraph(str(path), fmt, ScaledGraph.from_probes(*probes))


def resolve_model(model: str | None, work: Path) -> tuple[Path, str]:
    """An .onnx or model.xml file, a bundle folder, or a Hugging Face folder (exported + optimised like `export`)."""
    if model is not None:
        path = Path(model)
        if path.is_file() and path.suffix in (".onnx", ".xml"):
            return path, "onnx" if path.suffix == ".onnx" else "openvino-ir"
        if (path / "manifest.json").is_file():
            from ..runtime.manifest import read_bundle

            bundle = read_bundle(path, verify_hashes=False)
            return bundle.artefact, "onnx" if bundle.artefact.suffix == ".onnx" else "openvino-ir"
        if not path.exists():
            raise ModelSourceError(f"model '{model}' does not exist. Pass an .onnx file, an OpenVINO model.xml, a "
                                   "bundle folder or a Hugging Face folder (or no --model for all-MiniLM-L6-v2).")
    return _export_fp32(model, work), "onnx"


def _export_fp32(model: str | None, work: Path) -> Path:
    """The same FP32 ONNX `edgesdk export` starts from: frontend + graph passes."""
    import numpy as np

    from ..frontends import load_source
    from ..graph import optimize

    source = load_source(model, work)
    feeds = {name: np.ones((1, 8), dtype=np.int64) for name in source.input_names}
    out = work / "optimised_fp32.onnx"
    optimize(source.onnx_path, out, feeds, ("shape_inference", "constant_folding", "dead_node_elimination",
                                            "subexpression_elimination", "graph_fusion"))
    return out


@dataclass(frozen=True)
class CheckResult:
    bundle: str
    backend: str
    precision: str
    runtime: RuntimeModel
    estimate: PrecisionEstimate
    measured: object  # measure.Measurement

    @property
    def error_pct(self) -> float:
        measured = self.measured.increase
        return 100.0 * (self.estimate.total - measured) / max(1, measured)


def check(options: CheckOptions) -> CheckResult:
    """Estimate a bundle's own artefact as-is, then run it here in a fresh process and measure its peak RSS."""
    from ..runtime.manifest import read_bundle
    from .measure import measure

    check_shape(options.batch, options.seq)
    for name, value in (("runs", options.runs), ("threads", options.threads)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"--{name} must be a positive whole number, got {value!r}.")
    bundle = read_bundle(options.bundle)
    with tempfile.TemporaryDirectory(prefix="edgesdk-plan-") as tmp:
        graph = load_graph(str(bundle.path), options.batch, options.seq, Path(tmp))
    rt = export_backend(bundle.backend).memory
    est = estimate(graph.scaled, None, rt, "as-is", options.batch, options.seq)
    measured = measure(bundle.path, options.batch, options.seq, options.runs, options.threads)
    return CheckResult(str(bundle.path), bundle.backend, bundle.manifest.precision, rt, est, measured)
