"""Shared fixtures: a 2-layer random-weight BERT built from a config (real tokenizer from the default model),
and bundles exported from it once per test session with the real runtimes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def write_profile(path: Path, base: str, **sections) -> Path:
    """A user profile derived from a bundled one, with some [section] keys replaced."""
    import tomllib

    from edgesdk.profiles import _targets_dir

    data = tomllib.loads((_targets_dir() / f"{base}.toml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from edgesdk.frontends import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_dir / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64,
                                                                  "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return folder


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_model_dir):
    """intel + onnxruntime, fp32 + int8, of the tiny BERT (budget loosened: random weights, not a trained model)."""
    from edgesdk.api import ExportOptions, export

    work = tmp_path_factory.mktemp("tiny-export")
    profiles = [write_profile(work / f"tiny-{base}.toml", base, name=f"tiny-{base}",
                              fidelity={"cosine_mean": 0.98, "cosine_min": 0.9},
                              quant={"samples": 64})
                for base in ("intel", "onnxruntime")]
    result = export(ExportOptions(targets=tuple(str(p) for p in profiles), model=str(tiny_model_dir),
                                  out=str(work / "dist"), fidelity_samples=64, progress=False))
    return result


@pytest.fixture(scope="session")
def tiny_bundle(tiny_export) -> Path:
    return Path(next(b.path for b in tiny_export.bundles if b.backend == "onnxruntime" and b.precision == "fp32"))


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy to tamper with."""
    target = tmp_path / tiny_bundle.name
    shutil.copytree(tiny_bundle, target)
    return target


@pytest.fixture(scope="session")
def jetson_fp16(tmp_path_factory, tiny_model_dir) -> Path:
    """A TensorRT (jetson) fp16 bundle of the tiny BERT: its ONNX runs on ONNX Runtime's CPU provider here."""
    from edgesdk.api import ExportOptions, export

    work = tmp_path_factory.mktemp("jetson-fp16")
    profile = write_profile(work / "tiny-jetson.toml", "jetson", name="tiny-jetson",
                            shapes={"min_shape": [1, 16], "opt_shape": [1, 64], "max_shape": [4, 128],
                                    "max_seq": 128})
    result = export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(work / "dist"),
                                  precisions=("fp16",), fidelity_samples=16, progress=False))
    return Path(result.bundles[0].path)
