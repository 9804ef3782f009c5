"""Export-side backends: one module per backend, each with `convert(ctx) -> Artefact`.

A backend turns the optimised FP32 ONNX into its runtime's artefact at the asked precision, materialising the
shared QuantSpec with its own field's tool. Verification is not the backend's job: the pipeline runs every artefact
through the on-device runner afterwards. Adding a backend = one module here + one runner in edgesdk/runtime/.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendNotAvailableError
from ..frontends import SourceModel
from ..profiles import TargetProfile
from ..quant import CalibrationSet, QuantSpec

IMPLEMENTED = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "tflite": "tflite"}
PLANNED: dict[str, str] = {}


@dataclass
class ConvertContext:
    source: SourceModel
    onnx_path: Path  # the optimised FP32 ONNX
    out_dir: Path  # the staging bundle folder; write artefact files here
    precision: str
    spec: QuantSpec
    calibration: CalibrationSet | None
    profile: TargetProfile
    keep_float: tuple[str, ...] = ()  # node names the fallback loop returns to float


@dataclass
class Artefact:
    format: str
    entry: str  # the file the runner opens
    files: list[str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    target_fields: dict[str, Any] = field(default_factory=dict)  # runner hints, e.g. inference precision
    decisions: dict[str, Any] = field(default_factory=dict)  # what the quantizer was asked and did
    runtime_requirements: list[str] = field(default_factory=list)
    tokenizer: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. {"static_length": 128}


def backend_module(profile: TargetProfile):
    if profile.backend in PLANNED:
        raise BackendNotAvailableError(
            f"target '{profile.name}' uses the {profile.backend} backend ({PLANNED[profile.backend]}), which this "
            f"edgesdk version does not export yet. Targets that export now use: {', '.join(sorted(IMPLEMENTED))} "
            "(e.g. --target intel,onnxruntime).")
    return importlib.import_module(f"edgesdk.backends.{IMPLEMENTED[profile.backend]}")


def onnx_io_specs(model) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Names, numpy dtypes and shapes (ints, or strings for dynamic axes) of an ONNX model's inputs/outputs."""
    import onnx

    init = {i.name for i in model.graph.initializer}

    def spec(value):
        tensor = value.type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return ([spec(v) for v in model.graph.input if v.name not in init], [spec(v) for v in model.graph.output])
