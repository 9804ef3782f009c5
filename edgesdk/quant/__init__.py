"""Quantization: one QuantSpec (from the profile + CLI overrides) and one calibration set drive every target.

Backends materialise the spec with their field's tool (NNCF, ONNX Runtime's quantizer, ai-edge-quantizer, ...);
this package decides what to ask for, builds the shared calibration data once, and runs the fidelity-driven
fallback loop that keeps the most sensitive layers in higher precision when the budget is missed.
"""

from .data import CalibrationSet, TextSet, load_texts, packaged_texts
from .spec import QuantOverrides, QuantSpec

__all__ = ["CalibrationSet", "QuantOverrides", "QuantSpec", "TextSet", "load_texts", "packaged_texts"]
