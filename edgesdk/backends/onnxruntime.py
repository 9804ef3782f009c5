"""ONNX Runtime backend: the optimised FP32 ONNX as is, or a static INT8 QDQ ONNX made by NNCF's ONNX backend.

NNCF places QuantizeLinear/DequantizeLinear pairs with its transformer rules (the pattern ORT's CPU provider
fuses into integer kernels); weights are symmetric per-channel. Dynamic quantization uses ONNX Runtime's own
`quantize_dynamic` with per-channel weights (per-tensor loses ~3 points of cosine on MiniLM).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import QuantizationError, require
from . import Artefact, ConvertContext, onnx_io_specs


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
                    target_fields={"providers": ["CPUExecutionProvider"]}, decisions=decisions,
                    runtime_requirements=[f"onnxruntime=={ort.__version__}"])


def _quantize(ctx: ConvertContext, target: Path) -> dict:
    spec = ctx.spec
    if spec.mode == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(ctx.onnx_path), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(ctx.keep_float))
        return {"tool": "onnxruntime.quantization", "call": "quantize_dynamic", "per_channel": True,
                "excluded_nodes": list(ctx.keep_float)}
    if spec.mode == "weight-only":
        raise QuantizationError("the onnxruntime target has no weight-only INT8 mode; use --quant-mode static "
                                "or dynamic.")
    if ctx.calibration is None:
        raise QuantizationError("static INT8 needs calibration data; none was built.")
    from ..quant.nncf_options import nncf_quantize_onnx

    return nncf_quantize_onnx(ctx.onnx_path, target, spec, ctx.calibration, ctx.keep_float)
