"""Frontends: model sources → an FP32 ONNX with dynamic batch/sequence axes, plus what the runner must know.

`load_source(path, work_dir, tokenizer=None, opset=17)` accepts a Hugging Face / sentence-transformers folder or a
bare ONNX file (with `tokenizer` pointing at a folder holding tokenizer.json). The result, a `SourceModel`, also
carries an FP32 reference encoder (PyTorch for HF folders, ONNX Runtime for a bare ONNX) that fidelity is measured
against, and its model family (edgesdk.families).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelSourceError
from .source import SourceModel, default_model_path

__all__ = ["SourceModel", "default_model_path", "load_source"]


def load_source(model: str | Path | None, work_dir: Path, tokenizer: str | Path | None = None,
                opset: int = 17) -> SourceModel:
    path = Path(model) if model else default_model_path()
    if not path.exists():
        raise ModelSourceError(f"model path '{path}' does not exist. Pass a Hugging Face / sentence-transformers "
                               "folder (with config.json) or an .onnx file with --tokenizer DIR.")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelSourceError(f"model file '{path}' is not an .onnx file. Pass a model folder or an ONNX file.")
        from .onnx_file import load_onnx_file

        return load_onnx_file(path, work_dir, tokenizer)
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"'{path}' has no config.json: it is not a Hugging Face model folder. "
                               "Pass the folder that holds config.json, the weights and tokenizer.json.")
    from .hf import load_hf_folder

    return load_hf_folder(path, work_dir, opset=opset)
