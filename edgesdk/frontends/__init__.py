"""Frontends: model sources → an FP32 ONNX with a dynamic batch axis, plus what the runner must know.

`load_source(model, work_dir, tokenizer=None, opset=17, options=SourceOptions())` accepts
- a Hugging Face / sentence-transformers folder (text; hf.py),
- a bare ONNX file: text with `tokenizer` pointing at a folder holding tokenizer.json, or an image / tensor model
  (onnx_file.py, which probes the outputs),
- a torch.nn.Module: 'file.py:factory', 'package.module:factory' or 'torchvision:NAME' (torch_module.py).
The result, a `SourceModel`, also carries an FP32 reference (PyTorch where there is a module, ONNX Runtime for a
bare ONNX) that fidelity is measured against, and its model family (edgesdk.families).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelSourceError
from .source import SourceModel, SourceOptions, default_model_path

__all__ = ["SourceModel", "SourceOptions", "default_model_path", "load_source"]


def load_source(model: str | Path | None, work_dir: Path, tokenizer: str | Path | None = None,
                opset: int = 17, options: SourceOptions | None = None) -> SourceModel:
    options = options or SourceOptions()
    from .torch_module import is_module_spec

    if model and is_module_spec(str(model)):
        from .torch_module import load_module_source

        return load_module_source(str(model), work_dir, options, opset)
    path = Path(model) if model else default_model_path()
    if not path.exists():
        raise ModelSourceError(f"model path '{path}' does not exist. Pass a Hugging Face / sentence-transformers "
                               "folder (with config.json), an .onnx file, or a torch module as file.py:factory, "
                               "package.module:factory or torchvision:NAME.")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelSourceError(f"model file '{path}' is not an .onnx file. Pass a model folder, an ONNX file, or "
                                   f"a module factory ('{path}:factory' for a Python file).")
        from .onnx_file import load_onnx_file

        return load_onnx_file(path, work_dir, tokenizer, options)
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"'{path}' has no config.json: it is not a Hugging Face model folder. "
                               "Pass the folder that holds config.json, the weights and tokenizer.json.")
    from .hf import load_hf_folder

    return load_hf_folder(path, work_dir, opset=opset)
