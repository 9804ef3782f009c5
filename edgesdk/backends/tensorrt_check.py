"""Static TensorRT compatibility check of an ONNX artefact, before a bundle is written (no GPU needed).

Reports, each by name: ops the TensorRT ONNX parser does not take (onnx-tensorrt's documented support matrix for
TensorRT 10: the `N` rows, plus any op outside the default ONNX domain), an opset outside 9..20, Q/DQ nodes with a
non-zero or non-int8 zero-point (TensorRT's explicit quantization is symmetric int8), int64 tensors at the engine
boundary (TensorRT casts them down silently; edgesdk makes token inputs int32), unsupported dtypes, and dynamic
dimensions the profile gives no min/opt/max shape for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# onnx-tensorrt docs/operators.md (TensorRT 10.x): operators marked N, and ONNX ops newer than its opset range.
UNSUPPORTED_OPS = frozenset({
    "Bernoulli", "BitShift", "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})
OPSET_RANGE = (9, 20)
BOUNDARY_DTYPES = {"int32", "float32", "float16", "bool", "int8", "uint8", "bfloat16"}
SUPPORTED_DTYPES = BOUNDARY_DTYPES | {"int64", "float64"}


@dataclass(frozen=True)
class Finding:
    kind: str  # op | opset | zero_point | boundary_dtype | dtype | dynamic_dim
    where: str
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_model(model, shape_names: tuple[str, ...] = ("batch", "sequence")) -> list[Finding]:
    """Everything in `model` (an onnx.ModelProto) TensorRT 10 would refuse or silently change."""
    import onnx
    from onnx import numpy_helper

    findings = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding("op", node.name or node.op_type, f"{node.domain}::{node.op_type} is a custom-domain op"))
        elif node.op_type in UNSUPPORTED_OPS:
            findings.append(Finding("op", node.name or node.op_type, f"{node.op_type} is not supported by TensorRT's "
                                    "ONNX parser"))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        findings.append(Finding("opset", "model", f"opset {opset} is outside TensorRT 10's {OPSET_RANGE}"))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = constants.get(node.input[2])
            if zp is None:
                findings.append(Finding("zero_point", node.name, "zero-point is not a constant"))
            elif np.any(zp != 0):
                findings.append(Finding("zero_point", node.name, f"zero-point {np.unique(zp)[:4].tolist()} is not 0 "
                                        "(TensorRT needs symmetric quantization)"))
            elif zp.dtype != np.int8:
                findings.append(Finding("zero_point", node.name, f"zero-point dtype {zp.dtype} (TensorRT needs int8)"))
    for value in [*model.graph.input, *model.graph.output]:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        if dtype not in BOUNDARY_DTYPES:
            findings.append(Finding("boundary_dtype", value.name, f"{dtype} at the engine boundary; TensorRT "
                                    "wants int32/float tensors there"))
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and dim.dim_param not in shape_names:
                findings.append(Finding("dynamic_dim", value.name, f"axis {i} ('{dim.dim_param or '?'}') is dynamic "
                                        "but has no min/opt/max shape in the profile"))
    for init in model.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name
        if dtype not in SUPPORTED_DTYPES:
            findings.append(Finding("dtype", init.name, f"initializer dtype {dtype} is not a TensorRT type"))
    return findings
