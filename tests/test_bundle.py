import json

import numpy as np
import pytest

from edgesdk.errors import BundleError
from edgesdk.runtime import load, read_bundle
from edgesdk.runtime.verify import verify_bundle


def test_export_writes_every_target_and_precision(tiny_export):
    got = {(b.target, b.precision) for b in tiny_export.bundles}
    assert got == {(t, p) for t in ("tiny-intel", "tiny-onnxruntime") for p in ("fp32", "int8")}
    assert tiny_export.calibration_builds == 1  # one calibration set for both targets


def test_fp32_bundles_match_the_pytorch_reference(tiny_export):
    for b in tiny_export.bundles:
        if b.precision == "fp32":
            assert b.fidelity["cosine_min"] >= 0.9999, b


def test_int8_bundles_are_smaller_and_measured(tiny_export):
    sizes = {(b.backend, b.precision): b.size_bytes for b in tiny_export.bundles}
    for backend in ("openvino", "onnxruntime"):
        assert sizes[(backend, "int8")] < 0.5 * sizes[(backend, "fp32")]
    for b in tiny_export.bundles:
        assert b.fidelity["n"] == 64
        assert b.fidelity["cosine_mean"] >= 0.98


def test_manifest_contents(tiny_bundle):
    m = read_bundle(tiny_bundle).manifest
    assert m["format_version"] == 1
    assert m["model"]["pooling"] == "mean" and m["model"]["normalize"] is True
    assert {i["name"] for i in m["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
    assert m["inputs"][0]["shape"] == ["batch", "sequence"]
    assert "tokenizer/tokenizer.json" in m["files"] and "model.onnx" in m["files"]
    assert m["versions"]["onnxruntime"]
    assert not list(tiny_bundle.parent.glob(".*partial*")), "staging folders must not be left behind"


def test_verify_passes_on_a_fresh_bundle(tiny_bundle):
    result = verify_bundle(tiny_bundle)
    assert result.passed and result.cosine_vs_export_min > 0.9999


def test_edited_manifest_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["model"]["normalize"] = False
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="modified after export"):
        load(bundle_copy)


def test_modified_model_file_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="content changed: model.onnx"):
        load(bundle_copy)


def test_truncated_model_file_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(BundleError, match="size changed: model.onnx"):
        load(bundle_copy)


def test_missing_tokenizer_is_refused(bundle_copy):
    (bundle_copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing: tokenizer/tokenizer.json"):
        load(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        load(tmp_path)
    with pytest.raises(BundleError, match="not a folder"):
        load(tmp_path / "nothing")


def test_golden_io_is_stored(tiny_bundle):
    golden = np.load(tiny_bundle / "golden" / "expected.npz")
    assert golden["artefact"].shape == golden["reference"].shape
