"""TFLite op-support check: every op of a .tflite with its tensor dtypes, what NNAPI / the GPU delegate would not
take, whether the main path is fully integer, and which ops stayed float.

Runs after conversion on the artefact itself (the interpreter's op list, without delegates). Before conversion
the check is the converter's own: an op litert-torch cannot lower stops the export with an error naming the op
(`unsupported_op_name` extracts it from the converter's message).

Delegate support is data, not code. Sources (TensorFlow Lite 2.16–2.18 sources, read by hand; re-check when a
delegate changes):
- NNAPI: tensorflow/lite/delegates/nnapi/nnapi_delegate.cc, NNAPIDelegateKernel::Validate — the builtin ops it
  maps, with the minimum Android API level (27 = 8.1, 28 = 9, 29 = 10, 30 = 11, 31+ = NNAPI feature level 5/6).
  The delegate takes float32, uint8/int8 (asymmetric int8 from API 30) tensors; edgesdk treats int16 (16x8)
  activations as not delegable (the delegate has no 16x8 kernels), so such ops run on the CPU.
- GPU: tensorflow/lite/delegates/gpu/common/model_builder.cc, NewOperationParser (a superset of the documented
  list at ai.google.dev/edge/litert/performance/gpu). The GPU delegate computes in fp16/fp32; int8 models are
  dequantized on load, int16-activation ops are not taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NNAPI_MIN_API = {
    **dict.fromkeys(("ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
                     "DEQUANTIZE", "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP",
                     "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM",
                     "MAX_POOL_2D", "MUL", "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN",
                     "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH"), 27),
    **dict.fromkeys(("BATCH_TO_SPACE_ND", "DIV", "MEAN", "PAD", "SPACE_TO_BATCH_ND", "SQUEEZE", "STRIDED_SLICE",
                     "SUB", "TRANSPOSE"), 28),
    **dict.fromkeys(("ABS", "ARG_MAX", "ARG_MIN", "CAST", "EQUAL", "EXP", "EXPAND_DIMS", "GATHER", "GREATER",
                     "GREATER_EQUAL", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGICAL_NOT", "LOGICAL_OR",
                     "MAXIMUM", "MINIMUM", "NEG", "NOT_EQUAL", "POW", "PRELU", "QUANTIZE", "REDUCE_MAX",
                     "REDUCE_MIN", "REDUCE_PROD", "RSQRT", "SELECT", "SIN", "SLICE", "SPLIT", "SQRT", "SUM",
                     "TILE", "TOPK_V2", "TRANSPOSE_CONV", "PACK", "RESIZE_NEAREST_NEIGHBOR"), 29),
    **dict.fromkeys(("ELU", "FILL", "HARD_SWISH", "LEAKY_RELU", "MIRROR_PAD", "SQUARED_DIFFERENCE"), 30),
    "BATCH_MATMUL": 33,  # NNAPI feature level 6
}

GPU_OPS = frozenset((
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CONCATENATION", "CONV_2D", "COS", "CUMSUM",
    "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV", "ELU", "EQUAL", "EXP", "FLOOR",
    "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER", "GELU", "GREATER", "GREATER_EQUAL", "HARD_SWISH",
    "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "ONE_HOT", "PACK", "PAD", "PADV2", "POW", "PRELU",
    "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT_V2", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE",
    "TRANSPOSE", "TRANSPOSE_CONV",
))

# Ops allowed to touch float in a "full-integer" graph: the float→int entry (QUANTIZE), the exit (DEQUANTIZE),
# the mask's int→float CAST and the hybrid EMBEDDING_LOOKUP (int8 table, float rows: litert-quantizer has no
# static-int8 embedding lookup; the QUANTIZE after it starts the integer graph).
BOUNDARY_OPS = frozenset(("QUANTIZE", "DEQUANTIZE", "CAST", "EMBEDDING_LOOKUP"))
FLOAT_DTYPES = ("float32", "float16")

_UNSUPPORTED_PATTERNS = (
    re.compile(r"Lowering not found: (?:aten\.)?([\w.]+)"),
    re.compile(r"'(tfl\.\w+|tf\.\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"failed to legalize operation '([\w.]+)'"),
    re.compile(r"[Nn]o (?:lowering|conversion) (?:found )?for[: ]+'?([\w.:]+)"),
)


@dataclass(frozen=True)
class OpInfo:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    scope: str  # the op's first output tensor name (litert-torch writes the torch module path into it)

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.inputs)}->{','.join(self.outputs)})"

    @property
    def touches_float(self) -> bool:
        return any(d in FLOAT_DTYPES for d in (*self.inputs, *self.outputs))

    @property
    def int16(self) -> bool:
        return "int16" in self.inputs or "int16" in self.outputs


def unsupported_op_name(message: str) -> str | None:
    """The op named in a converter error message (litert-torch lowering or TFLite legalization), if any."""
    for pattern in _UNSUPPORTED_PATTERNS:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return None


def list_ops(path: Path) -> list[OpInfo]:
    """Every op of the .tflite in execution order, with its tensors' dtypes ('-' for an absent optional input)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def dtype(index: int) -> str:
        return np.dtype(tensors[index]["dtype"]).name if index >= 0 and index in tensors else "-"

    ops = []
    for op in interpreter._get_ops_details():  # the only public-ish op listing the Python interpreter has
        outputs = list(op["outputs"])
        scope = tensors[outputs[0]]["name"] if outputs and outputs[0] in tensors else ""
        ops.append(OpInfo(op["op_name"], tuple(dtype(i) for i in op["inputs"]),
                          tuple(dtype(i) for i in outputs), scope))
    return ops


def check_ops(ops: list[OpInfo], delegates: list[str], android_api: int = 30) -> dict:
    """The manifest's op_check: a verdict line and detail lines (the CLI's `inspect` prints them)."""
    histogram: dict[str, int] = {}
    for op in ops:
        histogram[op.signature] = histogram.get(op.signature, 0) + 1
    float_ops = [op for op in ops if op.touches_float and op.name not in BOUNDARY_OPS]
    names = {op.name for op in ops}
    quantized = any("int8" in op.outputs or "int16" in op.outputs for op in ops if op.name != "EMBEDDING_LOOKUP")
    int16 = [op for op in ops if op.int16]
    nnapi_no = sorted(n for n in names if NNAPI_MIN_API.get(n, 10**6) > android_api)
    gpu_no = sorted(n for n in names if n not in GPU_OPS)
    int8_weights = any("int8" in op.inputs[1:] for op in ops if op.name not in ("EMBEDDING_LOOKUP", "QUANTIZE"))
    fp16_weights = any(op.name == "DEQUANTIZE" and "float16" in op.inputs for op in ops)
    if not quantized and int8_weights:
        verdict = f"dynamic-range (hybrid): int8 weights, float activations; {len(ops)} ops, no integer main path"
    elif not quantized:
        verdict = f"float model{' (fp16 weights)' if fp16_weights else ''}: {len(ops)} ops, no integer main path"
    elif not float_ops:
        verdict = (f"full-integer main path: {len(ops)} ops, {len(int16)} with int16 activations (16x8), "
                   f"float only at the boundary ({', '.join(sorted(names & BOUNDARY_OPS))})")
    else:
        verdict = f"mixed: {len(float_ops)} of {len(ops)} ops stayed float"
    details = [f"{count:4d} x {sig}" for sig, count in sorted(histogram.items())]
    if quantized and float_ops:
        stayed = sorted({op.name for op in float_ops})
        details.append(f"stayed float: {', '.join(stayed)}")
    if "nnapi" in delegates:
        details.append(f"NNAPI (Android API {android_api}) would not take: {', '.join(nnapi_no) or 'nothing'}"
                       + (f"; {len(int16)} int16-activation ops run on CPU" if int16 else ""))
    if "gpu" in delegates:
        details.append(f"GPU delegate would not take: {', '.join(gpu_no) or 'nothing'}"
                       + (f"; {len(int16)} int16-activation ops run on CPU" if int16 else ""))
    return {"verdict": verdict, "details": details, "float_ops": len(float_ops), "int16_ops": len(int16),
            "nnapi_unsupported": nnapi_no, "gpu_unsupported": gpu_no}
