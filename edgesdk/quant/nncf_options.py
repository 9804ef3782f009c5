"""QuantSpec → keyword arguments for `nncf.quantize` (shared by every backend that quantizes through NNCF).

The mapping, not the math, is ours: symmetric activations → PERFORMANCE preset, asymmetric → MIXED; calibration
methods map onto NNCF's range estimators (minmax → MINMAX, percentile → MEAN_QUANTILE, mse → HISTOGRAM, which
minimises quantization error like PyTorch's HistogramObserver). NNCF has no KL-entropy estimator: asking for
'entropy' on an NNCF backend is refused rather than silently replaced.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import QuantizationError
from .spec import QuantSpec

_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM"}


def nncf_quantize_kwargs(nncf, spec: QuantSpec, keep_float: tuple[str, ...], samples: int,
                         model_type: str | None = "TRANSFORMER") -> dict[str, Any]:
    """NNCF's quantize() arguments for a spec; model_type is the family's (TRANSFORMER for text, None for CNNs)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if spec.calibration_method not in _ESTIMATORS:
        raise QuantizationError(f"calibration method '{spec.calibration_method}' is not available through NNCF; "
                                f"choose one of {', '.join(_ESTIMATORS)} (--calibration-method).")
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    estimator = getattr(RangeEstimatorParametersSet, _ESTIMATORS[spec.calibration_method])
    # per-tensor activation scales: NNCF's CNN scheme gives depthwise-conv inputs per-channel ones, which ONNX
    # Runtime cannot fuse into QLinearConv (no integer conv ran) and TensorRT does not take at all
    from nncf.quantization.advanced_parameters import QuantizationParameters

    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator,
                                              activations_quantization_params=QuantizationParameters(per_channel=False))
    if not spec.smooth_quant:
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(matmul=-1)  # -1 switches it off
    return {
        "preset": nncf.QuantizationPreset.PERFORMANCE if spec.activation_symmetric else nncf.QuantizationPreset.MIXED,
        "model_type": getattr(nncf.ModelType, model_type) if model_type else None,
        "subset_size": samples,
        "ignored_scope": ignored_scope(nncf, spec.float_ops, keep_float),
        "advanced_parameters": advanced,
    }


def ignored_scope(nncf, float_ops: tuple[str, ...], keep_float: tuple[str, ...]):
    """The spec's float_ops (op types like 'Softmax', or node-name regexes) plus the fallback loop's node names."""
    types = [op for op in float_ops if re.fullmatch(r"[A-Z][A-Za-z0-9]*", op)]
    patterns = [op for op in float_ops if op not in types]
    if not (types or patterns or keep_float):
        return None
    return nncf.IgnoredScope(names=list(keep_float), patterns=patterns, types=types, validate=False)


def nncf_quantize_onnx(src, dst, spec: QuantSpec, calibration, keep_float: tuple[str, ...]) -> dict[str, Any]:
    """Static INT8 QDQ ONNX through NNCF's ONNX backend; returns the decisions for the manifest."""
    from ..errors import require

    onnx = require("onnx", "export")
    nncf = require("nncf", "export")
    model_type = getattr(calibration, "model_type", "TRANSFORMER")
    kwargs = nncf_quantize_kwargs(nncf, spec, keep_float, len(calibration), model_type)
    quantized = nncf.quantize(onnx.load(str(src)), nncf.Dataset(list(calibration)), **kwargs)
    onnx.save(quantized, str(dst))
    return {"tool": f"nncf {nncf.__version__}", "call": "quantize", "format": "QDQ", "model_type": model_type,
            "preset": kwargs["preset"].name, "subset_size": kwargs["subset_size"], "ignored_nodes": list(keep_float)}
