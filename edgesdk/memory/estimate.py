"""Memory estimate per precision: weights by kind, peak activations from liveness, workspace, total vs budget.

Sizes scale with (batch, seq) the way a transformer's do: every activation's element count is c·batch^i·seq^j. The
planner binds the graph at three probe points — (b, s), (2b, s), (b, s/2) — reads each tensor's i and j off the
ratios, and can then re-run the liveness walk at any (batch, seq) in milliseconds: that is how the largest batch and
sequence that fit are found, without re-running shape inference. The asked point itself is always exact.

Assumptions per precision (documented in docs/plan.md):
- weights: fp32 = 4 B; fp16 = 2 B; int8 = 1 B for MatMul/Gemm/Gather weights + one fp32 scale per output channel
  (per row for embedding tables), biases and norms stay fp32; weight-only int4 = ½ B for MatMul weights + one fp16
  scale per group of 128, embeddings int8 (NNCF's backup precision), the rest fp32.
- activations: fp32 = 4 B, fp16 = 2 B; int8 and int4 on CPU runtimes (ONNX Runtime, OpenVINO CPU) keep the tensors
  between ops in fp32 (integer kernels quantize their inputs on the fly), so 4 B; a TensorRT int8 engine runs the
  layers around its Q/DQ pairs in fp16, so 2 B; a full-integer TFLite model (NNAPI/NPU) keeps int8 everywhere, so 1 B.
- OpenVINO on CPU decompresses an fp16 IR to f32 at compile time (INFERENCE_PRECISION_HINT=f32), so its fp16 row
  counts fp32 bytes in memory (the file is half the size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pathlib import Path
from typing import Any

from .liveness import Graph
from .onnx_graph import BoundGraph, Weight
from .runtime_model import MB, RuntimeModel, WeightBytes

TargetProfile = Any  # edgesdk.profiles.TargetProfile: profiles → backends → memory, so no import back

SEARCH_LIMIT = 1 << 16
WEIGHT_KINDS = ("embeddings", "matmul", "quant_params", "other")
INT4_GROUP = 128
# weight-only int4 per backend: (supported, how / why not)
@dataclass(frozen=True)
class PrecisionEstimate:
    """One precision's memory at one (batch, seq); `fits`/`max_*` are None when the budget is unknown."""

    precision: str
    supported: bool
    note: str
    weights: WeightBytes = field(default_factory=WeightBytes)
    runtime_copies: int = 0  # weights the runtime copies beside the file image (repacked MatMul weights)
    activations: int = 0
    inputs: int = 0
    workspace: int = 0
    overhead: int = 0  # the runtime's code and JIT kernels paged in by the first load and run
    activation_itemsize: int | None = None
    peak_op: str = ""
    budget: int = 0
    max_batch: int | None = None
    max_seq: int | None = None

    @property
    def total(self) -> int:
        return (self.weights.total + self.runtime_copies + self.activations + self.inputs + self.workspace
                + self.overhead)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "supported": self.supported, "note": self.note,
                "weights": self.weights.to_dict(), "runtime_copies": self.runtime_copies,
                "activations": self.activations, "activation_itemsize": self.activation_itemsize,
                "peak_op": self.peak_op, "inputs": self.inputs, "workspace": self.workspace,
                "overhead": self.overhead, "total": self.total, "budget": self.budget, "fits": self.fits,
                "max_batch": self.max_batch, "max_seq": self.max_seq}

    @property
    def fits(self) -> bool | None:
        return None if not self.budget or not self.supported else self.total <= self.budget


@dataclass(frozen=True)
class ScaledGraph:
    """A bound graph plus each tensor's batch/seq exponents, to size it at any (batch, seq)."""

    base: BoundGraph
    exponents: dict[str, tuple[float, int, int]]  # name -> (coefficient, batch power, seq power)
    input_exponents: dict[str, tuple[float, int, int]]

    @classmethod
    def from_probes(cls, base: BoundGraph, batch2: BoundGraph, seq2: BoundGraph) -> "ScaledGraph":
        b_factor = batch2.batch / base.batch
        s_factor = seq2.seq / base.seq

        def fit(name, a, b, s):
            i = _power(b.elems, a.elems, b_factor)
            j = _power(s.elems, a.elems, s_factor)
            return (a.elems / (base.batch ** i * base.seq ** j), i, j)

        acts = {n: fit(n, t, batch2.tensors[n], seq2.tensors[n]) for n, t in base.tensors.items()}
        feeds = {n: fit(n, t, batch2.inputs[n], seq2.inputs[n]) for n, t in base.inputs.items()}
        return cls(base, acts, feeds)

    def elems(self, name: str, batch: int, seq: int, table: str = "act") -> int:
        if batch == self.base.batch and seq == self.base.seq:
            return (self.base.tensors if table == "act" else self.base.inputs)[name].elems
        coef, i, j = (self.exponents if table == "act" else self.input_exponents)[name]
        return int(round(coef * batch ** i * seq ** j))

    def graph(self, batch: int, seq: int, float_itemsize: int | None) -> Graph:
        sizes = {n: self.elems(n, batch, seq) * _itemsize(t.itemsize, t.is_float, float_itemsize)
                 for n, t in self.base.tensors.items()}
        return Graph(self.base.ops, sizes, self.base.outputs)

    def input_bytes(self, batch: int, seq: int) -> int:
        return sum(self.elems(n, batch, seq, "inputs") * t.itemsize for n, t in self.base.inputs.items())


def _power(probe: int, base: int, factor: float) -> int:
    """The exponent k with probe = base · factor^k (0, 1 or 2 for a transformer's tensors)."""
    if probe <= 0 or base <= 0 or factor == 1:
        return 0
    return max(0, int(round(math.log(probe / base) / math.log(factor))))


def _itemsize(native: int, is_float: bool, override: int | None) -> int:
    return override if (override and is_float) else native


def weight_bytes(weights: tuple[Weight, ...], precision: str) -> WeightBytes:
    """Weight bytes by kind at `precision` ('as-is' = the dtypes stored in the model)."""
    totals = dict.fromkeys(WEIGHT_KINDS, 0)
    for w in weights:
        totals[w.kind] += _one_weight(w, precision)
    return WeightBytes(**totals)


def _one_weight(w: Weight, precision: str) -> int:
    n = w.elems
    if precision == "as-is" or not w.is_float:
        return int(n * w.itemsize)
    if precision == "fp16":
        return 2 * n
    big = w.kind in ("matmul", "embeddings") and len(w.shape) >= 2
    if precision == "int4" and big and w.kind == "matmul":
        return n // 2 + 2 * math.ceil(n / INT4_GROUP)
    if precision in ("int8", "int4") and big:
        channels = w.shape[0] if w.kind == "embeddings" else w.shape[-1]
        return n + 4 * channels
    return 4 * n


def largest(fits, start: int = 1) -> int:
    """The largest n ≥ start with fits(n) (fits is monotone), 0 if none, capped at SEARCH_LIMIT."""
    if not fits(start):
        return 0
    low, high = start, start * 2
    while high <= SEARCH_LIMIT and fits(high):
        low, high = high, high * 2
    high = min(high, SEARCH_LIMIT + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def estimate(scaled: ScaledGraph, profile: TargetProfile | None, rt: RuntimeModel, precision: str, batch: int,
             seq: int) -> PrecisionEstimate:
    if precision == "int4" and not rt.int4[0]:
        return PrecisionEstimate("int4", False, rt.int4[1])
    note = rt.int4[1] if precision == "int4" else ""
    weights = weight_bytes(scaled.base.weights, precision)
    device = profile.device.device if profile else "CPU"
    if precision == "fp16" and device.upper() in rt.fp16_weights_as_f32_on:
        note = f"{rt.backend} on {device} decompresses fp16 weights to f32 at compile: copies counted at f32 " \
               "(not measured)"
        copies_fp32 = weight_bytes(scaled.base.weights, "fp32").matmul
    else:
        copies_fp32 = None
    itemsize = rt.activation_itemsize(precision, bool(profile and profile.quant.full_integer), device)
    int_tables = sum(w.elems for w in scaled.base.weights if w.kind == "embeddings"
                     and (precision in ("int8", "int4") or (precision == "as-is" and not w.is_float)))
    copies = rt.runtime_copies(weights, int_tables) if copies_fp32 is None else copies_fp32
    workspace = getattr(profile.device, "workspace_mb", 0) * MB if profile else 0
    budget = profile.memory.budget_mb * MB if profile else 0

    def total(b: int, s: int) -> int:
        return (weights.total + copies + workspace + rt.overhead + scaled.input_bytes(b, s)
                + rt.activations(scaled.graph(b, s, itemsize)))

    fixed = PrecisionEstimate(
        precision, True, note, weights=weights, runtime_copies=copies,
        activations=rt.activations(scaled.graph(batch, seq, itemsize)), inputs=scaled.input_bytes(batch, seq),
        workspace=workspace, overhead=rt.overhead, activation_itemsize=itemsize,
        peak_op=_peak_op(scaled, batch, seq, itemsize), budget=budget)
    if not budget:
        return fixed
    from dataclasses import replace

    return replace(fixed, max_batch=largest(lambda b: total(b, seq) <= budget),
                   max_seq=largest(lambda s: total(batch, s) <= budget))


def _peak_op(scaled: ScaledGraph, batch: int, seq: int, itemsize: int | None) -> str:
    from .liveness import analyse

    return analyse(scaled.graph(batch, seq, itemsize)).peak_op


def memory_plan(profile: TargetProfile, onnx_path: Path, rt: RuntimeModel, batch: int, seq: int
                ) -> tuple[PrecisionEstimate, ...]:
    """The export's memory stage: every float/int8 precision the target accepts, at (batch, seq), for its FP32 ONNX
    under the backend's runtime memory model `rt`."""
    from .onnx_graph import bind, load_model

    model = load_model(onnx_path)
    probes = [bind(model, b, s) for b, s in ((batch, seq), (2 * batch, seq), (batch, max(seq // 2, 2)))]
    scaled = ScaledGraph.from_probes(*probes)
    return tuple(estimate(scaled, profile, rt, p, batch, seq) for p in ("fp32", "fp16", "int8")
                 if p in profile.precisions)
