"""Per-layer sensitivity, measured: how much quantization error each MatMul adds on real inputs.

The FP32 ONNX and a probe (`build_probe`: for static INT8 NNCF's QDQ of the same graph under the same spec; for
dynamic INT8 ONNX Runtime's `quantize_dynamic`, so the ranking sees the error dynamic activation quantization makes,
not the static ranges' error) run side by side in ONNX Runtime with every MatMul's activation inputs and output
exposed. A layer's sensitivity is the relative error of its
output minus the largest relative error already present at its inputs — the error it adds itself — averaged over
the samples whose final output drifts most (the budget's minimum cosine is lost on those, not on the average). The fallback loop
returns the highest-ranked layers to float first. Node names are the ONNX node names, which NNCF's IgnoredScope
accepts for both its ONNX and OpenVINO backends (OpenVINO keeps ONNX node names as friendly names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import require

QUANTIZABLE = ("MatMul", "Gemm", "Conv")  # the weight layers a fallback can hold back (Conv: CNNs)
WORST_SAMPLES = 8


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    added_error: float
    output_error: float


def _expose(model, names: list[str]):
    onnx = require("onnx", "export")
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def _run(model, feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep tensors addressable
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            out[name].append(value)
    return out


def build_probe(fp32_onnx: Path, probe: Path, spec, calibration) -> str:
    """The quantized twin the ranking compares with FP32, native to the spec's mode; returns what it is."""
    if spec.mode == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per-channel s8 weights, dynamic per-tensor u8 activations: the kernels the dynamic artefact runs
        quantize_dynamic(str(fp32_onnx), str(probe), per_channel=True, weight_type=QuantType.QInt8)
        return "onnxruntime quantize_dynamic (per-channel s8 weights, dynamic u8 activations)"
    from .nncf_options import nncf_quantize_onnx

    nncf_quantize_onnx(fp32_onnx, probe, spec, calibration, ())
    return "nncf static QDQ"


def rank_layers(fp32_onnx: Path, qdq_onnx: Path, feeds: list[dict[str, np.ndarray]]) -> list[LayerSensitivity]:
    onnx = require("onnx", "export")
    fp32 = onnx.load(str(fp32_onnx))
    weights = {i.name for i in fp32.graph.initializer}
    layers = [(n.name, [i for i in n.input if i not in weights], n.output[0])
              for n in fp32.graph.node if n.op_type in QUANTIZABLE]
    probe = onnx.load(str(qdq_onnx))
    qdq_tensors = {t for n in probe.graph.node for t in n.output}
    held = quantized_in(probe, [n for n, _, _ in layers])
    layers = [layer for layer in layers if layer[0] in held]
    inputs = {i.name for i in fp32.graph.input}
    final = fp32.graph.output[0].name
    names = sorted({t for _, ins, out in layers for t in [*ins, out] if t in qdq_tensors or t in inputs} | {final})
    ref = _run(_expose(fp32, names), feeds, names)
    got = _run(_expose(probe, names), feeds, names)

    worst = _worst_samples(got[final], ref[final], WORST_SAMPLES)

    def rel(name: str) -> float:
        if name in inputs:
            return 0.0
        return float(np.mean([np.linalg.norm(got[name][i] - ref[name][i]) / max(np.linalg.norm(ref[name][i]), 1e-12)
                              for i in worst]))

    ranked = []
    for node, ins, out in layers:
        if out not in names:
            continue
        out_err = rel(out)
        in_err = max([rel(i) for i in ins if i in names] or [0.0])
        ranked.append(LayerSensitivity(node, round(out_err - in_err, 6), round(out_err, 6)))
    return sorted(ranked, key=lambda s: s.added_error, reverse=True)


def quantized_in(probe, nodes: list[str]) -> set[str]:
    """The layers among `nodes` that the probe really quantizes: every computed input fed by a DequantizeLinear
    (QDQ), or the node replaced by integer ones (quantize_dynamic renames them). A layer the quantizer left float
    (NNCF skips the attention MatMuls fed by Softmax; quantize_dynamic skips MatMuls without a weight) can show
    added error, inherited from its inputs' drift, but holding it back changes nothing: the rebuild would be
    byte-identical."""
    producer = {o: n.op_type for n in probe.graph.node for o in n.output}
    constants = {i.name for i in probe.graph.initializer}
    kept = {n.name: n for n in probe.graph.node}
    return {name for name in nodes if name not in kept
            or all(producer.get(i) == "DequantizeLinear" for i in kept[name].input if i and i not in constants)}


def _worst_samples(got: list[np.ndarray], ref: list[np.ndarray], count: int) -> list[int]:
    """The samples whose final output drifts most: the fidelity budget's minimum is decided there."""
    errors = [np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12) for g, r in zip(got, ref)]
    return [int(i) for i in np.argsort(errors)[::-1][:count]]
