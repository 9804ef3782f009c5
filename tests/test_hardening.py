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


# -- C. `edgesdk verify` exit codes ------------------------------------------------------------------------------
def rehash(bundle: Path) -> None:
    """Re-hash a bundle after a deliberate edit, as a careful forger (or a buggy tool) would: hashes all agree."""
    import json

    from edgesdk.bundle import file_table
    from edgesdk.runtime.manifest import manifest_digest

    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = file_table(bundle)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def run_cli(*args: str):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def one_error_line(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_verify_exit_0_on_a_passing_bundle(tiny_bundle):
    done = run_cli("verify", str(tiny_bundle))
    assert done.returncode == 0 and "PASS" in done.stdout


def test_verify_exit_1_on_a_fidelity_failure(bundle_copy):
    import numpy as np

    expected = dict(np.load(bundle_copy / "golden" / "expected.npz"))
    expected["artefact"] = -expected["artefact"]  # consistent hashes, outputs that disagree with export time
    np.savez(bundle_copy / "golden" / "expected.npz", **expected)
    rehash(bundle_copy)
    done = run_cli("verify", str(bundle_copy))
    assert done.returncode == 1 and "FAIL" in done.stdout and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["hash", "model", "golden", "manifest", "missing"])
def test_verify_exit_2_on_an_invalid_bundle_without_a_traceback(bundle_copy, tmp_path, damage):
    import json

    if damage == "hash":  # tampered, not re-hashed: verification refuses it
        (bundle_copy / "model.onnx").write_bytes(b"x" + (bundle_copy / "model.onnx").read_bytes()[1:])
    elif damage == "model":  # re-hashed garbage: the runtime itself fails to parse it
        (bundle_copy / "model.onnx").write_bytes(b"not an onnx model")
        rehash(bundle_copy)
    elif damage == "golden":  # re-hashed golden file that is not an npz
        (bundle_copy / "golden" / "inputs.npz").write_bytes(b"PK\x03\x04 broken")
        rehash(bundle_copy)
    elif damage == "manifest":  # re-hashed manifest without its golden section
        manifest = json.loads((bundle_copy / "manifest.json").read_text())
        del manifest["golden"]
        (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
        rehash(bundle_copy)
    else:
        bundle_copy = tmp_path / "no-such-bundle"
    done = run_cli("verify", str(bundle_copy))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(bundle_copy.name) in one_error_line(done)
