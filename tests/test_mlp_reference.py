"""The small-MLP reference (examples/mlp_reference): PyTorch's own static INT8 beside edgesdk's INT8 bundles.

Runs the example's --quick mode (a short training on sklearn's bundled digits, the four bundles, 20 timed runs)
and checks that every row is there and that each INT8 row stays close to PyTorch FP32.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn", reason="the MLP reference trains on scikit-learn's bundled digits data")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp-reference")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "mlp_reference" / "run.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_every_reference_row_is_measured(quick_run):
    out, result = quick_run
    names = [r["name"] for r in result["rows"]]
    assert names[:2] == ["PyTorch FP32 (eager)", "PyTorch INT8 (torch.ao eager PTQ, x86)"]
    assert {(r.get("target"), r["precision"]) for r in result["rows"] if r["kind"] == "edgesdk"} == {
        (t, p) for t in ("onnxruntime", "intel") for p in ("fp32", "int8")}
    for row in result["rows"]:
        assert row["size_bytes"] > 0 and row["p50_us_batch1"] > 0 and row["p50_us_batch64"] > 0, row
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == 1 + len(result["rows"])  # header + one line per row


def test_int8_rows_stay_close_to_fp32_and_are_smaller(quick_run):
    _, result = quick_run
    rows = {(r["kind"], r.get("target"), r["precision"]): r for r in result["rows"]}
    fp32 = rows[("pytorch", None, "fp32")]
    assert fp32["accuracy"] >= 90, fp32  # the MLP learned digits: errors below are measured on a real model
    for key in (("edgesdk", "onnxruntime", "fp32"), ("edgesdk", "intel", "fp32")):
        assert rows[key]["max_abs_error"] < 1e-3 and rows[key]["cosine_min"] > 0.99999, rows[key]
    for key, row in rows.items():
        if key[2] != "int8":
            continue
        assert row["cosine_mean"] >= 0.995 and row["cosine_min"] >= 0.95, (key, row)
        assert row["top1_agreement"] >= 0.97 and abs(row["accuracy"] - fp32["accuracy"]) <= 2.0, (key, row)
        assert row["max_abs_error"] < 0.5 * result["fp32_max_abs_logit"], (key, row)
    assert rows[("pytorch", None, "int8")]["size_bytes"] < 0.5 * fp32["size_bytes"]
    assert rows[("edgesdk", "onnxruntime", "int8")]["size_bytes"] < 0.4 * rows[("edgesdk", "onnxruntime", "fp32")]["size_bytes"]
