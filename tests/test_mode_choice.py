"""On a CPU without int8 dot-product instructions, a profile's `without_int8_dot` modes are built beside its own
mode and timed side by side; the fastest that meets the budget is kept and the choice is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesdk.api import ExportOptions, export
from edgesdk.quant import QuantOverrides
from edgesdk.runtime.bench import cpu_features
from tests.conftest import write_profile


def test_static_and_weight_only_are_timed_and_the_faster_kept(tiny_model_dir, tmp_path):
    if cpu_features()["int8_dot_product"]:
        pytest.skip("this CPU has int8 dot-product instructions: static int8 is kept without a comparison")
    profile = write_profile(tmp_path / "tiny-intel.toml", "intel", name="tiny-intel",
                            fidelity={"cosine_mean": 0.98, "cosine_min": 0.9},
                            quant={"samples": 32, "without_int8_dot": ["weight-only"]})
    result = export(ExportOptions(targets=(str(profile),), precisions=("int8",), model=str(tiny_model_dir),
                                  out=str(tmp_path / "dist"), fidelity_samples=32, progress=False))
    (bundle,) = result.bundles
    choice = bundle.mode_choice
    assert choice and {c["mode"] for c in choice["candidates"]} == {"static", "weight-only"}
    timed = {c["mode"]: c["p50_ms"] for c in choice["candidates"]}
    assert choice["chosen"] == min(timed, key=timed.get) and "no int8 dot-product" in choice["why"]
    manifest = json.loads((Path(bundle.path) / "manifest.json").read_text())
    assert manifest["quantization"]["decisions"]["mode_choice"]["chosen"] == choice["chosen"]
    assert manifest["quantization"]["decisions"]["call"] == ("compress_weights" if choice["chosen"] == "weight-only"
                                                            else "quantize")
    assert len(list((tmp_path / "dist").iterdir())) == 1  # the other candidate's staging folder is gone

    explicit = export(ExportOptions(targets=(str(profile),), precisions=("int8",), model=str(tiny_model_dir),
                                    out=str(tmp_path / "dist2"), fidelity_samples=32, progress=False,
                                    quant=QuantOverrides(mode="static")))
    assert explicit.bundles[0].mode_choice is None  # an explicit --quant-mode is never second-guessed
