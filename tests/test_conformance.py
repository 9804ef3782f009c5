"""Conformance: every discovered backend × every bundled profile, end to end on the 2-layer BERT.

A profile (and so a backend) added to targets/ is covered here without editing this file: it is exported (fp32 and,
where accepted, int8) in one call, then each bundle is loaded, run, inspected, verified and carries a memory plan.
TensorRT bundles run their ONNX on ONNX Runtime's CPU provider here (no TensorRT on these machines).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesdk.backends import backends
from edgesdk.cli import main
from edgesdk.profiles import bundled_profiles, load_profile
from edgesdk.runtime import load, read_bundle
from edgesdk.runtime.registry import runtime_backend, runtime_backends
from edgesdk.runtime.verify import verify_bundle
from tests.conftest import write_profile

PROFILES = bundled_profiles()
# a backend whose own extra cannot be installed beside the others (tvm: see pyproject.toml) is tested where it is
MISSING = {name: backends()[load_profile(name).backend].missing() for name in PROFILES}
EXPORTABLE = [name for name in PROFILES if MISSING[name] is None]


def _param(name):
    return pytest.param(name, marks=pytest.mark.skipif(MISSING[name] is not None, reason=str(MISSING[name])))


def test_every_backend_has_both_halves_and_every_profile_a_backend():
    exporters, runners = backends(), runtime_backends()
    assert exporters and set(exporters) == set(runners)
    for name in PROFILES:
        profile = load_profile(name)
        assert profile.backend in exporters, name
        assert isinstance(profile.device, exporters[profile.backend].device), name
    for name, backend in exporters.items():
        assert backend.precisions and backend.memory.backend == name
        assert runtime_backend(name).install


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_model_dir) -> dict[str, dict[str, Path]]:
    """Every bundled profile, fp32 + int8 where it accepts int8, in ONE export (one calibration set)."""
    from edgesdk.api import ExportOptions, export

    work = tmp_path_factory.mktemp("conformance")
    targets = []
    for name in EXPORTABLE:
        targets.append(str(write_profile(
            work / f"c-{name}.toml", name, name=f"c-{name}", fidelity={"cosine_mean": 0.98, "cosine_min": 0.9},
            quant={"samples": 16},
            shapes={"max_seq": 128, "min_shape": [1, 16], "opt_shape": [1, 64], "max_shape": [4, 128],
                    "buckets": [32, 128],
                    # the bundled batched shapes name the bundled lengths: batched [4, 32] where they are built
                    **({"batch_shapes": [[4, 32]]} if load_profile(name).shapes.batch_shapes else {})})))
    result = export(ExportOptions(targets=tuple(targets), model=str(tiny_model_dir), out=str(work / "dist"),
                                  precisions=("fp32", "int8"), fidelity_samples=24, progress=False))
    assert result.calibration_builds == 1
    found: dict[str, dict[str, Path]] = {}
    for b in result.bundles:
        found.setdefault(b.target[2:], {})[b.precision] = Path(b.path)
    return found


@pytest.mark.parametrize("profile", [_param(p) for p in PROFILES])
def test_bundle_loads_runs_and_verifies(bundles, profile):
    assert set(bundles[profile]) == {"fp32", "int8"} & set(load_profile(profile).precisions)
    for precision, path in bundles[profile].items():
        bundle = read_bundle(path)
        assert bundle.backend == load_profile(profile).backend
        with load(path, threads=1) as runner:
            vectors = runner.embed(["a short text", "a somewhat longer sentence about edge devices", "ok"])
        assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        result = verify_bundle(path, threads=1)
        assert result.passed, (profile, precision, result)
        assert bundle.manifest.memory_plan is not None
        assert precision in bundle.manifest.memory_plan.per_precision


@pytest.mark.parametrize("profile", [_param(p) for p in PROFILES])
def test_inspect_shows_the_backends_own_lines(bundles, profile, capsys):
    path = next(iter(bundles[profile].values()))
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    bundle = read_bundle(path)
    for label, line in runtime_backend(bundle.backend).describe(bundle):
        assert line in text
    assert "memory" in text and "fidelity" in text
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["backend"] == bundle.backend


@pytest.mark.parametrize("profile", [_param(p) for p in PROFILES if "int8" in load_profile(p).precisions])
def test_int8_is_smaller_and_recorded(bundles, profile):
    fp32, int8 = bundles[profile]["fp32"], bundles[profile]["int8"]
    size = {k: sum(read_bundle(p).manifest.files[f].bytes for f in read_bundle(p).manifest.artefact.files)
            for k, p in (("fp32", fp32), ("int8", int8))}
    assert size["int8"] < 0.6 * size["fp32"], size
    quantization = read_bundle(int8).manifest.quantization
    choice = quantization.decisions.get("mode_choice")  # on a CPU without int8 dot product: measured, recorded
    assert quantization.spec["mode"] == (choice["chosen"] if choice else load_profile(profile).quant.mode)
