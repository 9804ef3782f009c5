"""Portable ONNX passes, run one by one so the report says what each changed.

The passes are onnxslim's own (folding, DCE, CSE, fusion) plus ONNX shape inference: edgesdk chooses and
orders them and checks the result, it does not re-implement them. After the passes the optimised graph is
run beside the original on a sample and must agree to 1e-4, or the export stops.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import EdgeSDKError, require

# name → onnxslim optimisation it enables (the others are skipped while it runs)
_SLIM = ("constant_folding", "dead_node_elimination", "subexpression_elimination", "graph_fusion")
PASSES: tuple[str, ...] = ("shape_inference",) + _SLIM


@dataclass
class PassResult:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float


@dataclass
class GraphReport:
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    passes: list[PassResult] = field(default_factory=list)
    max_abs_diff: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _counts(model) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _slim_only(name: str) -> Callable:
    def run(model):
        import onnxslim

        skip = [s for s in _SLIM if s != name] + ["weight_tying"]
        return onnxslim.slim(model, skip_optimizations=skip, no_shape_infer=True)

    return run


def _shape_inference(model):
    import onnx

    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def optimize(src: Path, dst: Path, sample: dict[str, np.ndarray], passes: tuple[str, ...] = PASSES) -> GraphReport:
    """Run `passes` over the ONNX at `src`, write the result to `dst`, check numerics against the original."""
    onnx = require("onnx", "export")
    require("onnxslim", "export")
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise EdgeSDKError(f"unknown graph pass(es) {unknown}; available: {', '.join(PASSES)}.")
    model = onnx.load(str(src))
    report = GraphReport(ops_before=_counts(model), ops_after={})
    for name in passes:
        run = _shape_inference if name == "shape_inference" else _slim_only(name)
        before, start = len(model.graph.node), time.perf_counter()
        model = run(model)
        report.passes.append(PassResult(name, before, len(model.graph.node), round(time.perf_counter() - start, 3)))
    report.ops_after = _counts(model)
    onnx.save(model, str(dst))
    report.max_abs_diff = _compare(src, dst, sample)
    if report.max_abs_diff > 1e-4:
        raise EdgeSDKError(f"graph passes changed the model's outputs by {report.max_abs_diff:.3g} (> 1e-4). "
                           f"Re-run with fewer passes (--passes), and report the model so the pass can be fixed.")
    return report


def _compare(a: Path, b: Path, feeds: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0] for p in (a, b)]
    return float(np.abs(outs[0] - outs[1]).max())
