"""edgesdk.runtime: the on-device side. Needs numpy, tokenizers and one runtime; never torch, onnx or the exporter.

    from edgesdk.runtime import load
    runner = load("dist/all-minilm-l6-v2-intel-int8", threads=1)
    vectors = runner.embed(["hello world"])       # [1, 384], L2-normalised, like sentence-transformers

Names are imported on first use, so the light modules (schema, manifest) load without numpy.
"""

_EXPORTS = {"Bundle": "manifest", "Manifest": "manifest", "read_bundle": "manifest",
            "Classification": "runner", "Runner": "runner", "load": "runner"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'edgesdk.runtime' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)
