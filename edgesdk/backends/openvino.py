"""OpenVINO backend: ONNX → OpenVINO IR (model.xml + model.bin); INT8 through NNCF's post-training quantization.

FP32 keeps f32 weights and asks the runner for INFERENCE_PRECISION_HINT=f32 (OpenVINO would silently run bf16 on
CPUs with avx512_bf16 otherwise). INT8 uses nncf.quantize with the transformer model type, the spec's preset and
calibration method, and an IgnoredScope for the nodes the fallback loop keeps in float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from . import Artefact, Backend, ConvertContext

MB = 1 << 20


@dataclass(frozen=True)
class OpenVINODevice:
    """[device] of an openvino profile."""

    device: str = field(default="CPU", metadata=check(pattern=r"[A-Z][A-Z0-9_.:,()-]*"))  # CPU, GPU, NPU, AUTO:...
    opset: int = field(default=17, metadata=check(min=13, max=23))  # ONNX opset the frontend exports


def convert(ctx: ConvertContext) -> Artefact:
    ov = require("openvino", "openvino")
    model = ov.convert_model(str(ctx.onnx_path))
    decisions = {}
    if ctx.precision == "int8":
        model, decisions = _quantize(model, ctx)
    xml = ctx.out_dir / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=ctx.precision == "fp16")
    inputs = [{"name": p.get_any_name(), "dtype": p.get_element_type().to_dtype().name,
               "shape": [d.get_length() if d.is_static else ("batch", "sequence")[i] if i < 2 else "?"
                         for i, d in enumerate(p.get_partial_shape())]} for p in model.inputs]
    outputs = [{"name": p.get_any_name(), "dtype": "float32",
                "shape": [d.get_length() if d.is_static else ("batch", "sequence")[i] if i < 2 else "?"
                          for i, d in enumerate(p.get_partial_shape())]} for p in model.outputs]
    return Artefact(format="openvino-ir", entry="model.xml", files=["model.xml", "model.bin"], inputs=inputs,
                    outputs=outputs, settings={"device": ctx.profile.device.device, "inference_precision": "f32"},
                    decisions=decisions, runtime_requirements=[f"openvino=={ov.__version__.split('-')[0]}"])


def _quantize(model, ctx: ConvertContext):
    nncf = require("nncf", "export")
    spec = ctx.spec
    if spec.mode == "weight-only":
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM if spec.weight_symmetric
                                           else nncf.CompressWeightsMode.INT8_ASYM)
        return compressed, {"tool": f"nncf {nncf.__version__}", "call": "compress_weights"}
    if spec.mode == "dynamic":
        raise QuantizationError("OpenVINO has no dynamic-quantization export mode in edgesdk; use --quant-mode "
                                "static (NNCF PTQ) or weight-only for the intel target.")
    if ctx.calibration is None:
        raise QuantizationError("static INT8 needs calibration data; none was built.")
    from ..quant.nncf_options import nncf_quantize_kwargs

    model_type = ctx.calibration.model_type
    keep = openvino_names(model, ctx.keep_float)
    kwargs = nncf_quantize_kwargs(nncf, spec, keep, len(ctx.calibration), model_type)
    quantized = nncf.quantize(model, nncf.Dataset(list(ctx.calibration)), **kwargs)
    return quantized, {"tool": f"nncf {nncf.__version__}", "call": "quantize", "model_type": model_type,
                       "preset": kwargs["preset"].name, "subset_size": kwargs["subset_size"],
                       "ignored_nodes": list(keep)}


def openvino_names(model, onnx_names: tuple[str, ...]) -> tuple[str, ...]:
    """ONNX node names (what the fallback loop ranks) as the converted model's op names: OpenVINO splits an ONNX
    Gemm (or a Conv with bias) into '<name>/WithoutBiases' (MatMul / Convolution) + '<name>' (Add), and the weights
    live on the first."""
    ops = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    weighted = ("MatMul", "Convolution", "GroupConvolution")
    return tuple(f"{n}/WithoutBiases" if ops.get(n) not in weighted and ops.get(f"{n}/WithoutBiases") in weighted
                 else n for n in onnx_names)


BACKEND = Backend(
    name="openvino", convert=convert, device=OpenVINODevice, precisions=("fp32", "fp16", "int8"), extra="openvino",
    requires=("openvino", "nncf"),
    tools=("openvino", "nncf"),
    spec={"mode": ("static", "weight-only"), "calibration_method": ("minmax", "percentile", "mse"),
          "weight_granularity": ("per_channel",), "activation_dtype": ("int8",),
          "activation_symmetric": (True, False), "smooth_quant": (True, False), "float_ops": ("*",)},
    memory=RuntimeModel("openvino", "sets", True, True, True, 32 * MB, True,
                        "model.bin memory-mapped + MatMul weights repacked; dynamic-shape activations share memory "
                        "per set of non-overlapping tensors",
                        int4=(True, "NNCF compress_weights INT4_SYM (MatMul weights; OpenVINO CPU/GPU/NPU run it); "
                                    "edgesdk export does not build it yet"),
                        fp16_weights_as_f32_on=("CPU",)),
)
