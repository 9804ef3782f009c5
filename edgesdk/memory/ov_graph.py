"""OpenVINO IR (model.xml + model.bin) → the planner's tensor table, so OpenVINO bundles are planned like ONNX ones.

The IR is read with OpenVINO itself, its inputs reshaped to [batch, seq] (OpenVINO infers every shape), and its ops
walked in topological order: Constants are weights (grouped by what reads them, looking through the Convert /
Subtract / Multiply decompression chain NNCF writes for int8 weights), Parameters are inputs, everything else is an
activation. Ops whose every input is constant (weight decompression) are folded into their consumer's kernel by the
CPU plugin, so they allocate nothing at run time — the same rule as for ONNX.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelSourceError, require
from .liveness import Op
from .onnx_graph import BoundGraph, Tensor, Weight

VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze"})
MATMUL_OPS = frozenset({"MatMul", "FullyConnected", "Convolution"})
GATHER_OPS = frozenset({"Gather"})
WEIGHT_SIDE_OPS = frozenset({"Convert", "Subtract", "Multiply", "Transpose", "Reshape", "Unsqueeze", "FakeQuantize"})


def bind_ir(xml: str | Path, batch: int, seq: int) -> BoundGraph:
    ov = require("openvino", "openvino")
    try:
        model = ov.Core().read_model(str(xml))
    except RuntimeError as exc:
        raise ModelSourceError(f"OpenVINO cannot read '{xml}': {exc}") from exc
    model.reshape({p.get_any_name(): ov.PartialShape([batch, seq]) for p in model.inputs})
    ordered = list(model.get_ordered_ops())
    quantized = any(n.get_type_name() == "FakeQuantize" for n in ordered)
    constant: set[str] = set()
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node in ordered:
        for slot, value in enumerate(node.input_values()):
            consumers.setdefault(_name(value), []).append((node, slot))
    ops, tensors, weights, inputs, outputs = [], {}, [], {}, []
    for node in ordered:
        kind = node.get_type_name()
        names = [_name(o) for o in node.outputs()]
        if kind == "Constant":
            constant.update(names)
            out = node.outputs()[0]
            weights.append(Weight(names[0], _kind(names[0], consumers), tuple(out.get_shape()),
                                  _itemsize(out.get_element_type()), out.get_element_type().is_real()))
            continue
        if kind == "Parameter":
            inputs[names[0]] = _tensor(node.outputs()[0])
            continue
        if kind == "Result":
            outputs.append(_name(node.input_values()[0]))
            continue
        real_inputs = [_name(v) for v in node.input_values()]
        if real_inputs and all(i in constant for i in real_inputs):
            constant.update(names)
            continue
        for out, name in zip(node.outputs(), names):
            if not out.get_partial_shape().is_static:
                raise ModelSourceError(f"OpenVINO left '{name}' ({kind}) with a dynamic shape after reshaping to "
                                       f"[{batch}, {seq}]; the planner needs static shapes.")
            tensors[name] = _tensor(out)
        views = kind in VIEW_OPS and real_inputs[0] in tensors
        if kind == "ScaledDotProductAttention" and quantized:
            names.append(_attention_scratch(node, tensors))
            outputs.append(names[-1])
        ops.append(Op(node.get_friendly_name(), kind, tuple(i for i in real_inputs if i not in constant),
                      tuple(names), views))
    return BoundGraph(tuple(ops), tensors, tuple(weights), inputs, tuple(outputs), batch, seq)


def _attention_scratch(node, tensors: dict) -> str:
    """Measured (docs/plan.md): in a model with int8 FakeQuantize ops the CPU plugin's SDPA keeps a private f32
    score buffer [batch, heads, q_len, kv_len] per node, never shared, so it is modelled as an output that lives to
    the end of the run."""
    q, k = (list(v.get_shape()) for v in node.input_values()[:2])
    name = f"{node.get_friendly_name()}:scratch"
    n = 1
    for d in (*q[:-1], k[-2]):
        n *= int(d)
    tensors[name] = Tensor(n, 4, True)
    return name


def _name(output) -> str:
    return f"{output.get_node().get_friendly_name()}:{output.get_index()}"


def _itemsize(element_type) -> float:
    return element_type.bitwidth / 8


def _tensor(output) -> Tensor:
    n = 1
    for d in output.get_shape():
        n *= int(d)
    et = output.get_element_type()
    return Tensor(n, max(1, et.bitwidth // 8), et.is_real())


def _kind(name: str, consumers, depth: int = 0) -> str:
    for node, slot in consumers.get(name, []):
        kind = node.get_type_name()
        if kind == "FakeQuantize" and slot > 0:
            return "quant_params"
        if kind in GATHER_OPS and slot == 0:
            return "embeddings"
        if kind in MATMUL_OPS:
            return "matmul"
        if kind in WEIGHT_SIDE_OPS and depth < 5:
            found = _kind(_name(node.outputs()[0]), consumers, depth + 1)
            if found != "other":
                return found
    return "other"
