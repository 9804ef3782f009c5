"""Frontends: model sources → an FP32 ONNX with dynamic batch/sequence axes, plus what the runner must know.

`load_source(path, tokenizer=None, work_dir=...)` accepts a Hugging Face / sentence-transformers folder or a bare
ONNX file (with `tokenizer` pointing at a folder holding tokenizer.json). The result, a `SourceModel`, also carries
an FP32 reference encoder (PyTorch for HF folders, ONNX Runtime for a bare ONNX) that fidelity is measured against.
"""

from .source import SourceModel, default_model_path, load_source

__all__ = ["SourceModel", "default_model_path", "load_source"]
