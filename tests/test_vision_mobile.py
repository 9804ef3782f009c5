"""The vision case study (examples/vision_mobile): Fashion-MNIST, a MobileNet-style CNN, FP32 / PTQ / QAT bundles.

The idx reader and the missing-data message run everywhere; the --quick run (tiny training on 3 000 images, 300 test
images, onnxruntime fp32 + PTQ and QAT int8) needs Debian's dataset-fashion-mnist and skips cleanly without it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "examples" / "vision_mobile" / "run.py"
DATA = Path("/usr/share/datasets/fashion-mnist")


def _example():
    spec = importlib.util.spec_from_file_location("vision_mobile_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_idx_files_are_read_with_numpy_and_bad_ones_refused(tmp_path):
    run = _example()
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    np.testing.assert_array_equal(run.read_idx(tmp_path / "x-idx3-ubyte.gz"), images)
    (tmp_path / "bad").write_bytes(bytes([0, 0, 13, 1]) + (2).to_bytes(4, "big") + b"\0" * 8)  # float idx
    with pytest.raises(ValueError, match="not a uint8 idx"):
        run.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(header + images.tobytes()[:-1])
    with pytest.raises(ValueError, match="holds 23 bytes"):
        run.read_idx(tmp_path / "short")


def test_missing_dataset_is_one_error_line_naming_the_package(tmp_path):
    done = subprocess.run([sys.executable, str(RUN), "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "dataset-fashion-mnist" in done.stderr and "--data DIR" in done.stderr


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if not (DATA / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed at {DATA} (apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("vision-mobile")
    done = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_builds_fp32_ptq_and_qat_and_measures_them_in_their_runtime(quick_run):
    out, result = quick_run
    assert {(r["target"], r["kind"]) for r in result["bundles"]} == {("onnxruntime", k) for k in ("fp32", "ptq", "qat")}
    assert result["export_failures"] == []
    fp32 = next(r for r in result["bundles"] if r["kind"] == "fp32")
    for row in result["bundles"]:
        assert row["eval_rows"] == 300 and 0 <= row["accuracy"] <= 100 and row["p50_ms"] > 0, row
        assert row["batchnorm_in_source"] == 13 and row["batchnorm_after_passes"] == row["batchnorm_in_artefact"] == 0
        manifest = json.loads((out / row["bundle"] / "manifest.json").read_text())
        assert manifest["model"]["family"] == "image" and manifest["evaluation"]["value"] == row["accuracy"]
        assert manifest["preprocessing"]["mean"] == [0.286] and manifest["preprocessing"]["channels"] == 1
        if row["precision"] == "int8":
            assert row["size_bytes"] < 0.5 * fp32["size_bytes"], row
            assert abs(row["accuracy"] - fp32["accuracy"]) < 15, row  # a barely trained model: loose, but not broken
    assert fp32["accuracy"] > 40, fp32  # 3 000 images × 2 epochs learn something (chance is 10 %)
    assert result["qat"]["tool"].startswith("nncf") and result["qat"]["float_accuracy_of_baked_weights"] > 10
    assert len([p for p in (out / "data" / "eval").iterdir() if p.is_dir()]) == 10  # one folder per class
    assert (out / "accuracy_vs_latency.png").stat().st_size > 10_000
    table = (out / "results.md").read_text()
    assert table.count("| onnxruntime |") == 3 and "| (reference) |" in table and "Goals:" in table
