"""A bare ONNX file (+ a tokenizer folder) as a model source; ONNX Runtime FP32 is its reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import ModelSourceError, require
from ..families import text
from ..families.text import TOKEN_INPUTS, read_sentence_transformers_config
from .source import Feeds, SourceModel, check_tokenizer_dir


def load_onnx_file(path: Path, work_dir: Path, tokenizer: str | Path | None) -> SourceModel:
    onnx = require("onnx", "export")
    ort = require("onnxruntime", "onnxruntime")
    if tokenizer is None:
        if (path.parent / "tokenizer.json").is_file():
            tokenizer = path.parent
        else:
            raise ModelSourceError(f"'{path}' is a bare ONNX file: pass the folder with its tokenizer.json as "
                                   "--tokenizer DIR (Python: tokenizer=...).")
    tok_dir = check_tokenizer_dir(Path(tokenizer))
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError / ValidationError / google.protobuf errors
        raise ModelSourceError(f"'{path}' is not a valid ONNX model ({type(exc).__name__}: {exc}). "
                               "Re-export it or check that the file was copied completely.") from exc
    names = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    unknown = [n for n in names if n not in TOKEN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelSourceError(f"'{path}' has inputs {names}; edgesdk text models take {list(TOKEN_INPUTS)} "
                               "(input_ids required).")
    output = model.graph.output[0].name
    local = work_dir / "source_fp32.onnx"
    shutil.copyfile(path, local)
    pooling, normalize, st_max = read_sentence_transformers_config(tok_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def reference(feeds: Feeds) -> np.ndarray:
        return session.run([output], {n: np.asarray(feeds[n], dtype=np.int64) for n in names})[0]

    rank = len(model.graph.output[0].type.tensor_type.shape.dim)
    task = "embedding" if rank == 3 else "classification"
    return SourceModel(name=path.stem, source=str(path), onnx_path=local, tokenizer_dir=tok_dir, task=task,
                       pooling=pooling if task == "embedding" else "softmax", normalize=normalize and task == "embedding",
                       max_length=int(st_max or 512), input_names=names, output_name=output, reference=reference,
                       family=text)
