"""ONNX Runtime backend: the optimised FP32 ONNX as is, or a static INT8 QDQ ONNX made by NNCF's ONNX backend.

NNCF places QuantizeLinear/DequantizeLinear pairs with its transformer rules (the pattern ORT's CPU provider
fuses into integer kernels); weights are symmetric per-channel. Dynamic quantization uses ONNX Runtime's own
`quantize_dynamic` with per-channel weights (per-tensor loses ~3 points of cosine on MiniLM).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from . import Artefact, Backend, ConvertContext, onnx_io_specs

MB = 1 << 20


@dataclass(frozen=True)
class ORTDevice:
    """[device] of an onnxruntime profile."""

    device: str = "CPU"  # a label: the CPU execution provider runs the bundle
    opset: int = field(default=17, metadata=check(min=13, max=23))  # ONNX opset the frontend exports


def convert(ctx: ConvertContext) -> Artefact:
    onnx = require("onnx", "export")
    ort = require("onnxruntime", "onnxruntime")
    target = ctx.out_dir / "model.onnx"
    decisions = {}
    if ctx.precision == "fp32":
        shutil.copyfile(ctx.onnx_path, target)
    elif ctx.precision == "int8":
        decisions = _quantize(ctx, target)
    else:
        raise QuantizationError(f"the onnxruntime backend builds fp32 and int8, not {ctx.precision}.")
    inputs, outputs = onnx_io_specs(onnx.load(str(target), load_external_data=False))
    return Artefact(format="onnx", entry="model.onnx", files=["model.onnx"], inputs=inputs, outputs=outputs,
                    settings={"providers": ["CPUExecutionProvider"]}, decisions=decisions,
                    runtime_requirements=[f"onnxruntime=={ort.__version__}"])


def _quantize(ctx: ConvertContext, target: Path) -> dict:
    spec = ctx.spec
    if spec.mode == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        excluded = [*ctx.keep_float, *float_op_nodes(ctx.onnx_path, spec.float_ops)]
        quantize_dynamic(str(ctx.onnx_path), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded)
        return {"tool": "onnxruntime.quantization", "call": "quantize_dynamic", "per_channel": True,
                "excluded_nodes": excluded}
    if spec.mode == "weight-only":
        raise QuantizationError("the onnxruntime target has no weight-only INT8 mode; use --quant-mode static "
                                "or dynamic.")
    if ctx.calibration is None:
        raise QuantizationError("static INT8 needs calibration data; none was built.")
    from ..quant.nncf_options import nncf_quantize_onnx

    return nncf_quantize_onnx(ctx.onnx_path, target, spec, ctx.calibration, ctx.keep_float)


def float_op_nodes(onnx_path: Path, float_ops: tuple[str, ...]) -> list[str]:
    """Node names a QuantSpec's float_ops select: op types ('MatMul') or node-name regexes."""
    import re

    if not float_ops:
        return []
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = {op for op in float_ops if re.fullmatch(r"[A-Z][A-Za-z0-9]*", op)}
    patterns = [re.compile(op) for op in float_ops if op not in types]
    return [n.name for n in model.graph.node if n.op_type in types or any(p.search(n.name) for p in patterns)]


BACKEND = Backend(
    name="onnxruntime", convert=convert, device=ORTDevice, precisions=("fp32", "int8"), extra="onnxruntime",
    tools=("onnxruntime", "onnx", "nncf"),
    spec={"mode": ("static", "dynamic"), "calibration_method": ("minmax", "percentile", "mse"),
          "weight_granularity": ("per_channel",), "weight_symmetric": (True,), "activation_dtype": ("int8",),
          "activation_symmetric": (True, False), "smooth_quant": (True, False), "float_ops": ("*",)},
    memory=RuntimeModel("onnxruntime", "arena+pattern", False, False, False, 8 * MB, True,
                        "run 1 allocates tensor by tensor from the BFC arena; from run 2 the memory pattern is one "
                        "extra block beside it",
                        int4=(True, "MatMulNBits via onnxruntime.quantization.matmul_nbits_quantizer (CPU EP); "
                                    "edgesdk export does not build it yet")),
)
