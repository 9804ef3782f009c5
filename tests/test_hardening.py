"""Regression tests for the hostile-user audit (issue 16): no pickle on user files, verify exit codes, --out checks
before any work, killed exports never loadable and cleaned up, build-engine running no bundle script, signing."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from conftest import ROOT

SOURCES = ROOT / "edgesdk"


# -- A. no pickle on user files ----------------------------------------------------------------------------------
class _Planted:
    """Unpickling this creates a marker file: stands in for code a planted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickle_checkpoint_is_never_unpickled(tiny_model_dir, tmp_path, caplog):
    from edgesdk.evaluate import LabelledSet
    from edgesdk.train.checkpoint import checkpoint_path
    from edgesdk.train.classifier import fine_tune
    from edgesdk.train.loop import TrainConfig

    marker = tmp_path / "pwned"
    out_dir = tmp_path / "out" / "models" / "tiny-data"
    out_dir.parent.mkdir(parents=True)
    legacy = checkpoint_path(out_dir).with_suffix(".pt")
    assert legacy.name == ".tiny-data.checkpoint.pt"  # where the pickle-era loop looked
    legacy.write_bytes(pickle.dumps({"step": 1, "model": _Planted(marker)}))
    data = LabelledSet(("good film", "bad film", "great", "awful"), ("1", "0", "1", "0"))
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        fine_tune(tiny_model_dir, data, out_dir, TrainConfig(epochs=1, batch_size=2, limit=None), progress=False)
    assert not marker.exists()
    assert "a pickle checkpoint is never loaded" in caplog.text
    assert (out_dir / "config.json").is_file()


def test_checkpoint_is_safetensors_plus_json_and_resumes(tiny_model_dir, tmp_path):
    import json

    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    from edgesdk.evaluate import LabelledSet
    from edgesdk.train.checkpoint import sidecar
    from edgesdk.train.classifier import text_encoder
    from edgesdk.train.loop import TrainConfig, train

    data = LabelledSet(("good film", "bad film", "great", "awful"), ("1", "0", "1", "0"))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    checkpoint = tmp_path / ".m.checkpoint.safetensors"
    config = TrainConfig(epochs=1, batch_size=2, limit=None, checkpoint_every=1)
    train(model, data, {"0": 0, "1": 1}, text_encoder(tiny_model_dir, 16), config, checkpoint, "t", False)
    with safe_open(str(checkpoint), "pt") as handle:
        keys = set(handle.keys())
    assert any(k.startswith("model/") for k in keys) and any(k.startswith("optimizer/") for k in keys)
    meta = json.loads(sidecar(checkpoint).read_text())
    assert meta["step"] == 2 and isinstance(meta["random"][1], list) and isinstance(meta["torch_rng"], list)
    # a damaged tensors file (its sha256 no longer matches the sidecar) is ignored, not half-loaded
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)
    again = train(model, data, {"0": 0, "1": 1}, text_encoder(tiny_model_dir, 16), config, checkpoint, "t", False)
    assert again["steps"] == 2


def test_no_unsafe_deserialisation_in_the_sources():
    for path in SOURCES.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import pickle" not in text and "pickle.load" not in text, path
        assert "weights_only=False" not in text, path
        assert "allow_pickle=True" not in text, path


def test_tflite_calibration_cache_round_trips_without_pickle(tmp_path):
    import numpy as np

    from edgesdk.backends import tflite_calibration

    result = {"serving_default_input_ids:0": {"min": np.array([-1.5], np.float32), "max": np.array([2.0], np.float32)},
              "model/dense;bias": {"min": np.zeros((1, 4)), "max": np.ones((1, 4))}}
    path = tmp_path / "calibration-2-abc.npz"
    tflite_calibration.save(path, result)
    back = tflite_calibration.load(path)
    assert set(back) == set(result)
    for name, qsv in result.items():
        for key, value in qsv.items():
            assert np.array_equal(back[name][key], value) and back[name][key].dtype == value.dtype
    with np.load(path, allow_pickle=False) as data:  # plain arrays: readable with pickle switched off
        assert len(data.files) == 5
