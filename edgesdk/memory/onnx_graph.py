"""ONNX graph → the planner's tensor table: shapes bound to a batch × sequence, weights by kind, activations by op.

The dynamic axes of the graph inputs are bound to the asked values (a dim_param naming 'batch' → batch; one naming
'seq'/'sequence'/'length' → sequence; an unnamed dynamic axis 0 → batch, axis 1 → sequence), then onnx shape inference
runs with data propagation. Tensors it leaves without a static shape go to ONNX Runtime's symbolic shape inference;
any still unknown raise ModelSourceError naming them. Initializers and Constant outputs are weights, grouped by what
reads them (embeddings = Gather tables, matmul = MatMul/Gemm, quant_params = scales and zero points, other); ops whose
inputs are all weights (a DequantizeLinear of an int8 weight, ...) are folded into their consumer by every runtime, so
they allocate nothing at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelSourceError, require
from .liveness import Graph, Op

VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
MATMUL_OPS = frozenset({"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "MatMulNBits", "FusedMatMul",
                        "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "Conv", "ConvInteger", "QLinearConv"})
GATHER_OPS = frozenset({"Gather", "GatherBlockQuantized"})
WEIGHT_SIDE_OPS = frozenset({"DequantizeLinear", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity"})
BATCH_WORDS = ("batch",)
SEQ_WORDS = ("seq", "sequence", "length", "token")


@dataclass(frozen=True)
class Tensor:
    """An activation's element count and element size as bound for one (batch, seq)."""

    elems: int
    itemsize: int
    is_float: bool


@dataclass(frozen=True)
class Weight:
    name: str
    kind: str  # embeddings | matmul | quant_params | other
    shape: tuple[int, ...]
    itemsize: int
    is_float: bool

    @property
    def elems(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class BoundGraph:
    """One ONNX graph with every tensor's size known at one (batch, seq)."""

    ops: tuple[Op, ...]
    tensors: dict[str, Tensor]  # activations (every op output that is not weight-side)
    weights: tuple[Weight, ...]
    inputs: dict[str, Tensor]  # graph inputs fed by the caller
    outputs: tuple[str, ...]
    batch: int
    seq: int

    def graph(self, float_itemsize: int | None = None) -> Graph:
        """The liveness graph, float activations counted at `float_itemsize` bytes (None = as in the model)."""
        sizes = {n: t.elems * (float_itemsize if float_itemsize and t.is_float else t.itemsize)
                 for n, t in self.tensors.items()}
        return Graph(self.ops, sizes, self.outputs)


def load_model(path: str | Path):
    onnx = require("onnx", "export")
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"ONNX file '{path}' does not exist. Pass an .onnx file, a model folder or a bundle.")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # DecodeError and friends
        raise ModelSourceError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}: {exc}).") from exc


def bind(model, batch: int, seq: int) -> BoundGraph:
    """Bind the dynamic axes to (batch, seq), infer every shape, and split weights from activations."""
    onnx = require("onnx", "export")
    model = _with_bound_inputs(model, batch, seq)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    known = _static_types(inferred)
    missing = _activation_names(inferred) - known.keys()
    if missing:
        inferred = _symbolic(inferred, missing)
        known = _static_types(inferred)
        missing = _activation_names(inferred) - known.keys()
    if missing:
        names = ", ".join(sorted(missing)[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ModelSourceError(f"the graph leaves {len(missing)} tensor(s) without a static shape at batch {batch}, "
                               f"seq {seq}: {names}. The planner needs shapes: re-export the model with shape "
                               "information (torch.onnx.export does), or run onnxruntime.tools.symbolic_shape_infer "
                               "on it first and pass the result.")
    return _split(inferred, known, batch, seq)


def _with_bound_inputs(model, batch: int, seq: int):
    onnx = require("onnx", "export")
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    init = {i.name for i in graph.initializer}
    del graph.value_info[:]
    values = [(v, False) for v in graph.input] + [(v, True) for v in graph.output]
    for value, is_output in values:
        if value.name in init or not value.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            bound = _dim_value(dim.dim_param, axis, batch, seq)
            if bound is None:
                if is_output:
                    continue
                raise ModelSourceError(f"input '{value.name}' has a dynamic axis {axis} named '{dim.dim_param}' that "
                                       "the planner cannot bind: it binds axes named like 'batch' and "
                                       "'sequence'/'seq'/'length'. Rename the axis or give it a fixed size.")
            dim.ClearField("dim_param")
            dim.dim_value = bound
    return model_copy


def _dim_value(param: str, axis: int, batch: int, seq: int) -> int | None:
    lowered = param.lower()
    if any(word in lowered for word in BATCH_WORDS):
        return batch
    if any(word in lowered for word in SEQ_WORDS):
        return seq
    if not param:
        return {0: batch, 1: seq}.get(axis)
    return None


def _static_types(model) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (static shape, onnx elem type) for every value whose shape is fully known."""
    found = {}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape") or not tensor.elem_type:
            continue
        dims = tensor.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            found[value.name] = (tuple(int(d.dim_value) for d in dims), tensor.elem_type)
    return found


def _activation_names(model) -> set[str]:
    weights = _weight_names(model)
    return {o for node in model.graph.node if node.op_type != "Constant" for o in node.output if o} - weights


def _weight_names(model) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _symbolic(model, missing: set[str]):
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return model
    import contextlib
    import tempfile

    # It writes sym_shape_infer_temp.onnx (+ external data) into the working directory: keep that out of the user's.
    with tempfile.TemporaryDirectory(prefix="edgesdk-ssi-") as tmp, contextlib.chdir(tmp):
        try:
            return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
        except Exception:  # noqa: BLE001 - any failure leaves the shapes missing; the caller names them
            return model


def _split(model, known, batch: int, seq: int) -> BoundGraph:
    onnx = require("onnx", "export")
    graph = model.graph
    weights = _weight_names(model)
    folded = _weight_side_outputs(graph, weights)
    constant = weights | folded
    ops, tensors = [], {}
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" or all(o in folded for o in node.output if o):
            continue
        outputs = tuple(o for o in node.output if o)
        for out in outputs:
            shape, elem = known[out]
            tensors[out] = _tensor(onnx, shape, elem)
        inputs = tuple(i for i in node.input if i and i not in constant)
        views = node.op_type in VIEW_OPS and bool(node.input) and node.input[0] not in constant
        ops.append(Op(node.name or f"{node.op_type}_{index}", node.op_type, inputs, outputs, views))
    feeds = {v.name: _tensor(onnx, *known[v.name]) for v in graph.input if v.name not in weights}
    return BoundGraph(tuple(ops), tensors, _weights(model, onnx), feeds, tuple(o.name for o in graph.output),
                      batch, seq)


def _tensor(onnx, shape: tuple[int, ...], elem: int) -> Tensor:
    import numpy as np

    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    n = 1
    for d in shape:
        n *= d
    return Tensor(n, dtype.itemsize, bool(np.issubdtype(dtype, np.floating)))


def _weight_side_outputs(graph, weights: set[str]) -> set[str]:
    """Outputs of ops whose every input is a weight (or another such output): folded, never allocated."""
    folded: set[str] = set()
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        real = [i for i in node.input if i]
        if real and all(i in weights or i in folded for i in real):
            folded.update(o for o in node.output if o)
    return folded


def _weights(model, onnx) -> tuple[Weight, ...]:
    graph = model.graph
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
    tensors = list(graph.initializer)
    tensors += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    names = [t.name for t in graph.initializer]
    names += [n.output[0] for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    out = []
    for name, proto in zip(names, tensors):
        import numpy as np

        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type))
        out.append(Weight(name, _kind(name, consumers, graph), tuple(int(d) for d in proto.dims), dtype.itemsize,
                          bool(np.issubdtype(dtype, np.floating))))
    return tuple(out)


def _kind(name: str, consumers, graph, depth: int = 0) -> str:
    """What reads this weight, looking through weight-side ops (DequantizeLinear, Cast, Transpose, ...)."""
    for node, slot in consumers.get(name, []):
        if node.op_type in ("DequantizeLinear", "QuantizeLinear") and slot > 0:
            return "quant_params"
        if node.op_type in GATHER_OPS and slot == 0 or node.op_type == "EmbedLayerNormalization" and slot in (2, 3, 4):
            return "embeddings"  # ORT's fused embedding (word, position, segment tables at slots 2-4)
        if node.op_type in ("Attention", "QAttention") and slot == 1:
            return "matmul"  # ORT's fused attention: the packed Q/K/V weight
        if node.op_type in MATMUL_OPS:
            return "matmul"
        if node.op_type in WEIGHT_SIDE_OPS and depth < 4 and node.output:
            kind = _kind(node.output[0], consumers, graph, depth + 1)
            if kind != "other":
                return kind
    return "other"
