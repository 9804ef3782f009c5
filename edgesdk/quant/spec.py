"""QuantSpec: the typed description of how a model is quantized for one target.

It starts from the profile's `[quant]` table (what the hardware requires) and takes CLI overrides; a spec the
target cannot run (asymmetric activations for TensorRT, int16 activations where the backend has none, ...) is
refused with a QuantizationError naming the fix. PTQ and QAT read the same spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import QuantizationError

TargetProfile = Any  # edgesdk.profiles.TargetProfile, which imports this module (no import back)

QUANT_MODES = ("dynamic", "static", "weight-only")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")

# The minimum number of calibration samples each method needs to give stable ranges.
MIN_SAMPLES = {"minmax": 8, "percentile": 32, "entropy": 32, "mse": 16}


@dataclass(frozen=True)
class QuantOverrides:
    """What a user may override from the command line; None keeps the profile's value."""

    mode: str | None = None
    calibration_method: str | None = None
    samples: int | None = None
    activation_symmetric: bool | None = None
    float_ops: tuple[str, ...] | None = None
    smooth_quant: bool | None = None


@dataclass(frozen=True)
class QuantSpec:
    mode: str
    weight_dtype: str
    weight_granularity: str
    weight_symmetric: bool
    activation_dtype: str
    activation_symmetric: bool
    calibration_method: str
    samples: int
    float_ops: tuple[str, ...]
    int16_activations_allowed: bool
    full_integer: bool
    smooth_quant: bool = True

    @classmethod
    def from_profile(cls, profile: TargetProfile, overrides: QuantOverrides | None = None) -> "QuantSpec":
        q = profile.quant
        spec = cls(mode=q.mode, weight_dtype=q.weight_dtype, weight_granularity=q.weight_granularity,
                   weight_symmetric=q.weight_symmetric, activation_dtype=q.activation_dtype,
                   activation_symmetric=q.activation_symmetric, calibration_method=q.calibration_method,
                   samples=q.samples, float_ops=tuple(q.float_ops),
                   int16_activations_allowed=q.int16_activations_allowed, full_integer=q.full_integer,
                   smooth_quant=q.smooth_quant)
        if overrides is not None:
            changes = {k: v for k, v in asdict(overrides).items() if v is not None}
            spec = replace(spec, **changes)
        spec.check(profile)
        return spec

    def check(self, profile: TargetProfile) -> None:
        if self.mode not in QUANT_MODES:
            raise QuantizationError(f"quantization mode '{self.mode}' is unknown; allowed: {', '.join(QUANT_MODES)}.")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise QuantizationError(f"calibration method '{self.calibration_method}' is unknown; allowed: "
                                    f"{', '.join(CALIBRATION_METHODS)}.")
        need = MIN_SAMPLES[self.calibration_method]
        if self.mode == "static" and self.samples < need:
            raise QuantizationError(f"{self.samples} calibration samples are too few for '{self.calibration_method}' "
                                    f"(needs at least {need}); raise --calibration-samples.")
        if profile.quant.activation_symmetric_required and not self.activation_symmetric:
            raise QuantizationError(f"target '{profile.name}' ({profile.backend}) needs symmetric activations "
                                    "(zero-point 0); drop the asymmetric-activation override.")
        if self.activation_dtype == "int16" and not self.int16_activations_allowed:
            raise QuantizationError(f"target '{profile.name}' does not run int16 activations; use int8.")

    def to_dict(self) -> dict:
        return asdict(self)
