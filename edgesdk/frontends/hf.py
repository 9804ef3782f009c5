"""Hugging Face / sentence-transformers folder → FP32 ONNX (TorchScript exporter, opset 17, dynamic axes).

Pooling and normalisation are read from the sentence-transformers files (modules.json, 1_Pooling/config.json,
sentence_bert_config.json) so the runner reproduces `SentenceTransformer.encode()`. A folder whose config names a
sequence-classification architecture becomes a classifier (logits output, labels from id2label).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelSourceError, require
from ..families import text
from ..families.text import TOKEN_INPUTS, read_prompts, read_sentence_transformers_config
from .source import Feeds, SourceModel, check_tokenizer_dir

TRAINING_RECORD = "edgesdk_training.json"  # written by edgesdk.train beside a fine-tuned / QAT model


class _Encoder:
    """Wraps an HF model so ONNX export sees (input_ids, attention_mask[, token_type_ids]) → one tensor."""

    @staticmethod
    def build(model, input_names: list[str], output: str):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                out = self.model(**dict(zip(input_names, args)))
                return out.logits if output == "logits" else out.last_hidden_state

        return Wrapper().eval()


def load_hf_folder(folder: Path, work_dir: Path, opset: int = 17) -> SourceModel:
    torch = require("torch", "export")
    transformers = require("transformers", "export")
    check_tokenizer_dir(folder)
    config = json.loads((folder / "config.json").read_text())
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    try:
        auto = transformers.AutoModelForSequenceClassification if is_classifier else transformers.AutoModel
        # eager attention keeps the exported mask arithmetic plain (no SDPA-specific kernels in the graph)
        model = auto.from_pretrained(str(folder), attn_implementation="eager").eval()
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load the model in '{folder}': {exc}") from exc
    pooling, normalize, st_max = read_sentence_transformers_config(folder)
    max_length = int(st_max or min(config.get("max_position_embeddings", 512), 512))
    input_names = [n for n in TOKEN_INPUTS if n != "token_type_ids" or config.get("type_vocab_size", 0) > 0]
    output = "logits" if is_classifier else "last_hidden_state"
    wrapper = _Encoder.build(model, input_names, output)
    onnx_path = work_dir / "source_fp32.onnx"
    export_onnx(wrapper, input_names, output, onnx_path, opset)

    def reference(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(np.asarray(feeds[n], dtype=np.int64)) for n in input_names]
            return wrapper(*args).float().numpy()

    labels = [str(v) for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())]
    record = folder / TRAINING_RECORD
    return SourceModel(
        name=model_name(folder),
        source=str(folder), onnx_path=onnx_path, tokenizer_dir=folder,
        task="classification" if is_classifier else "embedding",
        pooling="softmax" if is_classifier else pooling, normalize=normalize and not is_classifier,
        max_length=max_length, input_names=input_names, output_name=output,
        labels=labels if is_classifier else [], reference=reference, torch_module=model,
        training=json.loads(record.read_text()) if record.is_file() else None, family=text, opset=opset,
        **dict(zip(("prompts", "default_prompt_name", "similarity_fn_name"), read_prompts(folder))),
    )


def model_name(folder: Path) -> str:
    """The folder's name, or for a package's generic 'model' folder, the model it holds."""
    return folder.name if folder.name != "model" else _name_from_package(folder)


def _name_from_package(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.is_file() and "all-MiniLM-L6-v2" in readme.read_text(errors="ignore")[:4000]:
        return "all-minilm-l6-v2"
    return folder.parent.name.replace("_", "-")


def export_onnx(module, input_names: list[str], output: str, path: Path, opset: int) -> None:
    import torch

    sample = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in input_names)
    axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(module, sample, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=[output], dynamic_axes=axes, do_constant_folding=True)
