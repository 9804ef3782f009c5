"""TensorRT backend (Jetson, discrete NVIDIA GPUs): a TensorRT-ready ONNX plus the settings to build the engine on
the device.

INT8 is explicit quantization: NNCF's ONNX PTQ with the PERFORMANCE preset (symmetric int8 activations, zero-point
0; symmetric per-channel weights), placed by NNCF's transformer rules, which TensorRT fuses into int8 kernels.
MatMuls fed by a Softmax are kept in float: NNCF would give their input an unsigned (uint8) quantizer, which
TensorRT cannot take. Token inputs become int32 (TensorRT has no int64 engine I/O). FP16 and FP32 ship the FP32
ONNX and let the builder flags decide. Before anything is written, a static check (tensorrt_check.py) must find
nothing TensorRT would refuse. The engine itself is built on the device: `build_engine.sh` (trtexec) or
`edgesdk build-engine BUNDLE`, cached per TensorRT version and GPU.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..errors import EdgeSDKError, QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from . import Artefact, Backend, ConvertContext, onnx_io_specs
from .tensorrt_check import check_model


@dataclass(frozen=True)
class TensorRTDevice:
    """[device] of a tensorrt profile: what build_engine.sh / `edgesdk build-engine` use on the device."""

    device: str = "GPU"
    dla_core: int = field(default=-1, metadata=check(min=-1, max=16))  # -1 = GPU only
    gpu_fallback: bool = True
    workspace_mb: int = field(default=0, metadata=check(min=0, max=1 << 20))
    tensorrt_version: str = ""
    opset: int = field(default=17, metadata=check(min=13, max=23))


def convert(ctx: ConvertContext) -> Artefact:
    onnx = require("onnx", "export")
    max_seq = ctx.profile.shapes.max_shape[1]
    if ctx.source.family.NAME == "text" and max_seq > ctx.source.max_length:
        raise EdgeSDKError(f"target '{ctx.profile.name}': shapes.max_shape sequence {max_seq} is longer than the "
                           f"model's max length {ctx.source.max_length}; set [shapes] max_shape = "
                           f"[{ctx.profile.shapes.max_shape[0]}, {ctx.source.max_length}] in the profile.")
    decisions: dict = {}
    source = ctx.onnx_path
    if ctx.precision == "int8":
        if ctx.spec.mode != "static":
            raise QuantizationError(f"TensorRT INT8 needs static quantization (explicit Q/DQ); got --quant-mode "
                                    f"{ctx.spec.mode}. Drop the override or use --precision fp16.")
        from ..quant.nncf_options import nncf_quantize_onnx

        softmax_fed = softmax_fed_matmuls(onnx.load(str(source)))
        keep = tuple(dict.fromkeys((*ctx.keep_float, *softmax_fed)))
        quantized = ctx.out_dir.parent / f".{ctx.out_dir.name}-qdq.onnx"
        try:
            decisions = nncf_quantize_onnx(source, quantized, ctx.spec, ctx.calibration, keep)
            model = onnx.load(str(quantized))
            resigned = signed_activation_quantizers(model)
            if resigned:
                decisions["unsigned_to_int8"] = {
                    "quantizers": resigned, "why": "TensorRT takes int8 zero-point-0 quantizers only; NNCF gives "
                    "non-negative tensors (ReLU outputs) uint8 ones: their scale × 255/127, as TensorRT's own int8 "
                    "quantization of such tensors would be"}
        finally:
            quantized.unlink(missing_ok=True)
        decisions["float_for_tensorrt"] = {"nodes": list(softmax_fed),
                                           "why": "input is a Softmax output: NNCF gives it a uint8 quantizer"}
    else:
        model = onnx.load(str(source))
    model = int32_integer_inputs(model)
    findings = check_model(model)
    if findings:
        listed = "; ".join(f"{f.kind} at {f.where}: {f.detail}" for f in findings[:10])
        raise EdgeSDKError(f"the ONNX for target '{ctx.profile.name}' would not build on TensorRT "
                           f"{ctx.profile.device.tensorrt_version}: {listed}. Export another precision, or report "
                           "the model so the conversion can handle it.")
    onnx.save(model, str(ctx.out_dir / "model.onnx"))
    inputs, outputs = onnx_io_specs(model)
    settings = build_settings(ctx, inputs)
    (ctx.out_dir / "build_engine.sh").write_text(build_script(settings), encoding="utf-8")
    (ctx.out_dir / "build_engine.sh").chmod(0o755)
    return Artefact(format="onnx-tensorrt", entry="model.onnx", files=["model.onnx", "build_engine.sh"], inputs=inputs,
                    outputs=outputs, decisions=decisions,
                    settings={"device": ctx.profile.device.device, "tensorrt": settings,
                              "tensorrt_compatibility": [f.to_dict() for f in findings]},
                    runtime_requirements=["onnxruntime-gpu (TensorRT/CUDA EPs) or tensorrt + cuda-python"])


def signed_activation_quantizers(model) -> int:
    """Re-express symmetric uint8 activation quantizers (zero point 0, range [0, 255·s]) as int8 ones (zero point 0,
    scale 255/127·s) in place; returns how many. An asymmetric uint8 quantizer is left for check_model to report."""
    import onnx
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale, zero = init.get(node.input[1]), init.get(node.input[2])
        if zero is None or scale is None or zero.data_type != onnx.TensorProto.UINT8 or node.input[2] in done:
            continue
        if numpy_helper.to_array(zero).any():
            continue
        zero.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zero).astype("int8"), zero.name))
        if node.input[1] not in done:
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * (255 / 127), scale.name))
            done.add(node.input[1])
        done.add(node.input[2])
    quantized = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in done}
    for value in model.graph.value_info:  # the recorded uint8 types of their outputs
        if value.name in quantized:
            value.type.tensor_type.elem_type = onnx.TensorProto.INT8
    return len(quantized)


def softmax_fed_matmuls(model) -> list[str]:
    """MatMul nodes whose activation input comes from a Softmax (directly or through Cast/Identity/Dropout)."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def from_softmax(tensor: str) -> bool:
        node = producer.get(tensor)
        while node is not None and node.op_type in ("Cast", "Identity", "Dropout"):
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "Softmax"

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(from_softmax(i) for i in n.input)]


def int32_integer_inputs(model):
    """Make int64 inputs int32 at the boundary, with a Cast inside the graph (TensorRT has no int64 engine I/O)."""
    import onnx

    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        if value.name in initializers or tensor.elem_type != onnx.TensorProto.INT64:
            continue
        inner = f"{value.name}_int64"
        for node in model.graph.node:
            node.input[:] = [inner if i == value.name else i for i in node.input]
        model.graph.node.insert(0, onnx.helper.make_node("Cast", [value.name], [inner], to=onnx.TensorProto.INT64,
                                                         name=f"{value.name}_to_int64"))
        tensor.elem_type = onnx.TensorProto.INT32
    return model


def build_settings(ctx: ConvertContext, inputs: list[dict]) -> dict:
    shapes = ctx.profile.shapes
    device = ctx.profile.device
    flags = {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[ctx.precision]

    def dims(spec: dict, profile_dims) -> list[int]:
        """Text inputs take the profile's [batch, sequence]; image and tensor inputs keep their own static
        dimensions, with the profile's batch."""
        static = [d for d in spec["shape"][1:] if isinstance(d, int)]
        if ctx.source.family.NAME == "text" or len(static) != len(spec["shape"]) - 1:
            return list(profile_dims)
        return [profile_dims[0], *static]

    return {
        "version": device.tensorrt_version,
        "precision_flags": flags,
        "shapes": {kind: {spec["name"]: dims(spec, d) for spec in inputs}
                   for kind, d in (("min", shapes.min_shape), ("opt", shapes.opt_shape), ("max", shapes.max_shape))},
        "workspace_mb": device.workspace_mb,
        "dla_core": device.dla_core,
        "gpu_fallback": device.gpu_fallback,
        "timing_cache": "engines/timing.cache",
        "engine_dir": "engines",
        "plan": "model.plan",
    }


def build_script(settings: dict) -> str:
    from ..runtime.trtexec import trtexec_args

    args = trtexec_args(settings, "model.onnx", "$PLAN", settings["timing_cache"])
    command = " \\\n  ".join(shlex.quote(a) if not a.startswith("--saveEngine") else '--saveEngine="$PLAN"'
                             for a in args)
    return f"""#!/usr/bin/env bash
# Build this bundle's TensorRT engine on the device, once; cached per TensorRT version and GPU.
# Same settings as manifest.json target.tensorrt (and `edgesdk build-engine BUNDLE`).
set -euo pipefail
cd "$(dirname "$0")"
command -v trtexec >/dev/null || {{ echo "trtexec not found: install TensorRT (JetPack ships it at /usr/src/tensorrt/bin)" >&2; exit 2; }}
TRT=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -1 | tr -d ' ' || true)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || tr -d '\\0' </proc/device-tree/model 2>/dev/null || echo gpu)
KEY=$(echo "${{TRT:-trt}}_${{GPU}}" | tr -c 'A-Za-z0-9_.\\n-' '_')
mkdir -p "{settings['engine_dir']}/$KEY"
PLAN="{settings['engine_dir']}/$KEY/{settings['plan']}"
if [ -f "$PLAN" ]; then echo "engine cached: $PLAN"; exit 0; fi
{command}
echo "engine built: $PLAN"
"""


def parse_script_shapes(script: str) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes as written in a build_engine.sh (tests compare them with the manifest)."""
    out = {}
    for kind in ("min", "opt", "max"):
        arg = next(t for t in script.replace("\\\n", " ").split() if t.startswith(f"--{kind}Shapes="))
        out[kind] = {name: [int(d) for d in dims.split("x")]
                     for name, dims in (p.split(":") for p in arg.split("=", 1)[1].split(","))}
    return out


BACKEND = Backend(
    name="tensorrt", convert=convert, device=TensorRTDevice, precisions=("fp32", "fp16", "int8"), extra="export",
    requires=("onnx", "nncf", "onnxruntime"),
    tools=("onnx", "nncf"), shape_policies=("profiles",),
    spec={"mode": ("static",), "calibration_method": ("minmax", "percentile", "mse"),
          "weight_granularity": ("per_channel",), "activation_dtype": ("int8",), "activation_symmetric": (True,),
          "smooth_quant": (True, False), "float_ops": ("*",)},
    memory=RuntimeModel("tensorrt", "liveness", False, False, False, 0, False,
                        "not measured: ideal liveness and one copy of the weights (TensorRT plans its own "
                        "activation memory at build time)",
                        int4=(False, "not supported: TensorRT's int4 weight-only GEMMs need ModelOpt AWQ engines "
                                     "that edgesdk's TensorRT path (Q/DQ int8) does not produce"),
                        int8_activation_bytes=2, full_integer_activation_bytes=2),
)
