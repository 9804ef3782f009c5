"""Quantization: one QuantSpec (from the profile + CLI overrides) and one calibration set drive every target.

Backends materialise the spec with their field's tool (NNCF, ONNX Runtime's quantizer, litert-quantizer, ...);
this package decides what to ask for, builds the shared calibration data once, and runs the fidelity-driven
fallback loop that keeps the most sensitive layers in higher precision when the budget is missed.
"""

_EXPORTS = {"CalibrationSet": "data", "TextSet": "data", "load_texts": "data", "packaged_texts": "data",
            "QuantOverrides": "spec", "QuantSpec": "spec"}


def __getattr__(name: str):  # names load on first use: `edgesdk --help` needs the spec's choices, not numpy
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'edgesdk.quant' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)
