import shutil

import numpy as np
import pytest

from edgesdk.errors import ModelSourceError
from edgesdk.frontends import load_source


def test_unknown_model_path(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_source(str(tmp_path / "no-such-model"), tmp_path)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_source(str(tmp_path), tmp_path)


def test_corrupt_onnx_file(tmp_path, tiny_model_dir):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelSourceError, match="not a valid ONNX model"):
        load_source(str(bad), tmp_path, tokenizer=tiny_model_dir)


def test_truncated_onnx_file(tmp_path, tiny_bundle, tiny_model_dir):
    data = (tiny_bundle / "model.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelSourceError, match="not a valid ONNX model"):
        load_source(str(cut), tmp_path, tokenizer=tiny_model_dir)


def test_bare_onnx_needs_a_tokenizer(tmp_path, tiny_bundle):
    model = tmp_path / "alone" / "model.onnx"
    model.parent.mkdir()
    shutil.copyfile(tiny_bundle / "model.onnx", model)
    with pytest.raises(ModelSourceError, match="--tokenizer"):
        load_source(str(model), tmp_path)
    with pytest.raises(ModelSourceError, match="no tokenizer.json"):
        load_source(str(model), tmp_path, tokenizer=tmp_path)


def test_bare_onnx_with_tokenizer(tmp_path, tiny_bundle, tiny_model_dir):
    source = load_source(str(tiny_bundle / "model.onnx"), tmp_path, tokenizer=tiny_model_dir)
    assert source.task == "embedding" and source.pooling == "mean" and source.normalize
    feeds = {n: np.ones((1, 5), dtype=np.int64) for n in source.input_names}
    assert source.reference(feeds).shape == (1, 5, 64)


def test_hf_folder_reads_sentence_transformers_settings(tmp_path, tiny_model_dir):
    source = load_source(str(tiny_model_dir), tmp_path)
    assert (source.pooling, source.normalize, source.max_length) == ("mean", True, 128)
    assert source.onnx_path.is_file()


def test_non_model_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="not an .onnx file"):
        load_source(str(path), tmp_path)
