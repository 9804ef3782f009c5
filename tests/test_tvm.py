"""The TVM backend: buckets, padding, the aarch64 cross build and its host twin, threads, settings and tuning.

The conformance suite already exports both TVM profiles; these tests export the 2-layer BERT once more with two
small buckets (16, 64: the profile's 128 and 256 are clamped to max_seq 64) to check what is TVM's own.
"""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", exc_type=ImportError)  # absent, or not importable beside the android extra

from edgesdk.errors import BundleError, InputError  # noqa: E402
from edgesdk.runtime import load, read_bundle  # noqa: E402
from edgesdk.runtime.registry import runtime_backend  # noqa: E402
from edgesdk.runtime.verify import verify_bundle  # noqa: E402
from tests.conftest import write_profile  # noqa: E402

EM_X86_64, EM_AARCH64 = 62, 183
TEXTS = ["a short text", "a somewhat longer sentence about edge devices and what they run", "ok"]


def e_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return struct.unpack("<H", header[18:20])[0]


@pytest.fixture(scope="module")
def tvm_bundles(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    from edgesdk.api import ExportOptions, export

    work = tmp_path_factory.mktemp("tvm")
    targets = [str(write_profile(work / f"t-{name}.toml", name, name=f"t-{name}", shapes={"max_seq": 64},
                                 device={"buckets": [16, 64, 128, 256]},
                                 fidelity={"cosine_mean": 0.98, "cosine_min": 0.9}))
               for name in ("tvm-x86", "tvm-arm64")]
    result = export(ExportOptions(targets=tuple(targets), model=str(tiny_model_dir), out=str(work / "dist"),
                                  fidelity_samples=16, progress=False))
    return {b.target[2:]: Path(b.path) for b in result.bundles}


def test_buckets_are_clamped_to_the_max_length_and_the_tokenizer_follows(tvm_bundles):
    bundle = read_bundle(tvm_bundles["tvm-x86"])
    assert bundle.settings.buckets == (16, 64) and bundle.settings.entries == ("seq16", "seq64")
    assert bundle.manifest.tokenizer.max_length == 64
    assert bundle.manifest.fidelity.cosine_min >= 0.9999
    assert set(bundle.manifest.artefact.files) == {"model.so", "weights.npz"}
    assert e_machine(bundle.artefact) == EM_X86_64


def test_padding_to_a_bucket_leaves_the_real_tokens_unchanged(tvm_bundles):
    with load(tvm_bundles["tvm-x86"], threads=1) as runner:
        feeds = runner.tokenize(["edge devices run small models"])  # ~8 tokens → the 16 bucket
        seq = feeds["input_ids"].shape[1]
        assert seq < 16
        short = runner.run(feeds)["last_hidden_state"]
        assert short.shape[:2] == (1, seq)
        padded = {k: np.pad(v, ((0, 0), (0, 40 - seq))) for k, v in feeds.items()}  # → the 64 bucket
        long = runner.run(padded)["last_hidden_state"]
        assert long.shape[:2] == (1, 40)
        np.testing.assert_allclose(long[:, :seq], short, atol=1e-4)
        batch = runner.run(runner.tokenize(TEXTS))["last_hidden_state"]  # 3 rows through batch-1 functions
        assert batch.shape[0] == 3
        with pytest.raises(InputError, match="at most 64 tokens"):
            runner.run({k: np.zeros((1, 65), np.int64) for k in feeds})


def test_arm64_bundle_is_an_aarch64_library_verified_through_its_host_twin(tvm_bundles):
    path = tvm_bundles["tvm-arm64"]
    bundle = read_bundle(path)
    s = bundle.settings
    assert e_machine(bundle.artefact) == EM_AARCH64
    assert json.loads(s.target)["mtriple"] == "aarch64-linux-gnu" and json.loads(s.target)["mcpu"] == "cortex-a76"
    assert s.machine == "aarch64" and s.host_machine == "x86_64"
    assert e_machine(bundle.file(s.host_library)) == EM_X86_64
    assert bundle.manifest.quantization.decisions["device_library_verified_here"] is False
    lines = dict(runtime_backend("tvm").describe(bundle))
    assert "has not run" in lines["verified with"]
    assert verify_bundle(path, threads=1).passed


def test_threads_and_concurrent_callers_give_the_same_vectors(tvm_bundles):
    with load(tvm_bundles["tvm-x86"], threads=1) as runner:
        expected = runner.embed(TEXTS)
        results: list[np.ndarray] = []

        def work():
            for _ in range(3):
                results.append(runner.embed(TEXTS))

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 9
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    with load(tvm_bundles["tvm-x86"], threads=2) as runner:
        np.testing.assert_allclose(runner.embed(TEXTS), expected, atol=1e-5)


def test_a_library_for_another_machine_without_a_twin_is_refused(tvm_bundles):
    from dataclasses import replace

    from edgesdk.runtime.tvm import TVMSession

    bundle = read_bundle(tvm_bundles["tvm-arm64"])
    alone = replace(bundle, settings=replace(bundle.settings, host_library="", host_machine=""))
    with pytest.raises(BundleError, match="compiled for aarch64"):
        TVMSession(alone, threads=1)


def test_settings_are_validated(tvm_bundles):
    from edgesdk.runtime.schema import decode
    from edgesdk.runtime.tvm import TVMSettings

    good = json.loads((tvm_bundles["tvm-x86"] / "manifest.json").read_text())["target"]["settings"]
    assert decode(TVMSettings, good, BundleError).buckets == (16, 64)
    for bad, message in (({"buckets": [64, 16]}, "ascending"), ({"entries": ["seq16", "run"]}, "does not match"),
                         ({"machine": "riscv64"}, "not allowed"), ({"library": "../x.so"}, "does not match"),
                         ({"batch": 0}, "out of range")):
        with pytest.raises(BundleError, match=message):
            decode(TVMSettings, dict(good, **bad), BundleError)


def test_fp16_is_mixed_precision_compute_verified_like_fp32(tmp_path, tiny_model_dir):
    from edgesdk.api import ExportOptions, export

    profile = write_profile(tmp_path / "h.toml", "tvm-x86", name="h", shapes={"max_seq": 16},
                            device={"buckets": [16]})
    result = export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "d"),
                                  precisions=("fp16",), fidelity_samples=8, progress=False))
    bundle = read_bundle(result.bundles[0].path)
    assert bundle.manifest.quantization.decisions["call"] == "tvm.relax.transform.ToMixedPrecision"
    assert bundle.manifest.fidelity.cosine_min >= 0.9999
    with load(result.bundles[0].path, threads=1) as runner:
        assert runner.embed(TEXTS).dtype == np.float32


def test_dynamic_int8_is_refused_before_any_work(tmp_path, tiny_model_dir):
    from edgesdk.api import ExportOptions, export
    from edgesdk.errors import QuantizationError
    from edgesdk.quant.spec import QuantOverrides

    with pytest.raises(QuantizationError, match="cannot honour mode = 'dynamic'"):
        export(ExportOptions(targets=("tvm-x86",), model=str(tiny_model_dir), out=str(tmp_path),
                             precisions=("int8",), quant=QuantOverrides(mode="dynamic"), progress=False))


def test_tuning_a_cross_target_is_refused(tmp_path, tiny_model_dir):
    from edgesdk.api import ExportOptions, export
    from edgesdk.errors import EdgeSDKError

    profile = write_profile(tmp_path / "arm.toml", "tvm-arm64", name="arm", shapes={"max_seq": 16},
                            device={"buckets": [16], "tune_trials": 4})
    with pytest.raises(EdgeSDKError, match="measures every trial on the device"):
        export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "d"),
                             progress=False))


@pytest.mark.slow
def test_tuning_database_is_bundled_and_reused(tmp_path, tiny_model_dir):
    """A few MetaSchedule trials on one bucket (slow: TVM's tensor-intrinsic import alone takes a minute)."""
    from edgesdk.api import ExportOptions, export

    profile = write_profile(tmp_path / "tuned.toml", "tvm-x86", name="tuned", shapes={"max_seq": 16},
                            device={"buckets": [16]}, fidelity={"cosine_mean": 0.98, "cosine_min": 0.9})
    from edgesdk.errors import EdgeSDKError

    out = tmp_path / "dist"
    options = ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(out), fidelity_samples=8,
                            progress=False, device=(("tune_trials", 4),))
    try:
        first = read_bundle(export(options).bundles[0].path)
    except EdgeSDKError as exc:  # apache-tvm 0.27.0.post1 segfaults in TuneContext init on this project's CPUs
        if "MetaSchedule tuning failed" not in str(exc):
            raise
        assert not [p for p in out.iterdir() if p.name != "tvm-tuning"]  # no bundle, no staging left behind
        pytest.xfail(f"MetaSchedule crashed, reported as a named error: {exc}")
    assert first.settings.tuned_trials == 4
    assert {"tuning/database_workload.json", "tuning/database_tuning_record.json"} <= set(
        first.manifest.artefact.files)
    assert first.manifest.quantization.decisions["tune_seconds"] > 0
    cache = list((out / "tvm-tuning").iterdir())
    assert len(cache) == 1 and (cache[0] / "edgesdk-tuning.json").is_file()
    again = read_bundle(export(options).bundles[0].path)
    assert again.manifest.quantization.decisions["tune_seconds"] == 0  # the cached database, no new trials
    assert again.manifest.fidelity.cosine_min >= 0.9999
