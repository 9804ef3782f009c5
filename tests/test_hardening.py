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


def rehash(bundle: Path) -> None:
    """Re-hash a bundle after a deliberate edit, as a careful forger (or a buggy tool) would: hashes all agree."""
    import json

    from edgesdk.bundle import file_table
    from edgesdk.runtime.manifest import manifest_digest

    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    from edgesdk.runtime.schema import encode

    manifest["files"] = encode(file_table(bundle))
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


# -- D. `--out` checked before any work -------------------------------------------------------------------------
@pytest.fixture()
def tmpfs(tmp_path):
    """Mount a tmpfs with the given options (read-only, or a tiny size) for the test; skipped where not allowed."""
    import subprocess

    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _export(out: Path, model: Path | str, **extra):
    from edgesdk.api import ExportOptions, export

    return export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), model=str(model), out=str(out),
                                fidelity_samples=16, progress=False, **extra))


def test_out_that_is_a_file_fails_before_the_model_is_loaded(tmp_path):
    from edgesdk.outdir import OutputError

    out = tmp_path / "dist"
    out.write_text("not a folder")
    # the model does not exist: a ModelSourceError would mean the model was looked at before --out
    with pytest.raises(OutputError, match="is an existing file"):
        _export(out, tmp_path / "no-such-model")
    with pytest.raises(OutputError, match="is a file, so the folder cannot be created"):
        _export(out / "sub", tmp_path / "no-such-model")


def test_out_that_is_a_file_exits_2_with_one_error_line(tmp_path):
    out = tmp_path / "dist"
    out.write_text("x")
    done = run_cli("export", "--target", "onnxruntime", "--out", str(out), "--model", str(tmp_path / "nope"))
    assert done.returncode == 2 and "is an existing file" in one_error_line(done)


def test_out_on_a_read_only_mount_is_refused(tmpfs, tmp_path):
    from edgesdk.outdir import OutputError

    read_only = tmpfs("ro,size=4m")
    with pytest.raises(OutputError, match="not writable.*Read-only file system"):
        _export(read_only / "dist", tmp_path / "no-such-model")


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root writes into a chmod 0500 folder anyway; the read-only mount test covers it")
def test_out_in_a_folder_without_write_permission_is_refused(tmp_path):
    from edgesdk.outdir import OutputError

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="not writable"):
        _export(locked / "dist", tmp_path / "no-such-model")


def test_out_without_room_for_the_bundles_is_refused(tmpfs, tiny_model_dir):
    from edgesdk.outdir import OutputError, expected_bytes

    small = tmpfs("size=1m")  # a real 1 MB file system: the tiny BERT's bundle needs ~10 MB + the margin
    assert expected_bytes(tiny_model_dir, 1) > 1 << 20
    with pytest.raises(OutputError, match=r"MB free on its file system; this export needs about"):
        _export(small / "dist", tiny_model_dir)
    assert not (small / "dist").exists()


def test_free_space_estimate_scales_with_the_bundles(monkeypatch, tiny_model_dir, tmp_path):
    import shutil
    from collections import namedtuple

    from edgesdk import outdir

    weights = outdir.source_weight_bytes(tiny_model_dir)
    assert weights == (tiny_model_dir / "model.safetensors").stat().st_size
    assert outdir.expected_bytes(tiny_model_dir, 4) > 4 * weights
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 40, 0, outdir.expected_bytes(tiny_model_dir, 2)))
    outdir.check_free_space(tmp_path, outdir.expected_bytes(tiny_model_dir, 2))  # exactly enough: fine
    with pytest.raises(outdir.OutputError, match="MB free"):
        outdir.check_free_space(tmp_path, outdir.expected_bytes(tiny_model_dir, 3))


def test_trained_export_checks_out_before_training(tmp_path, tiny_model_dir):
    from edgesdk.api import ExportOptions
    from edgesdk.outdir import OutputError
    from edgesdk.train.pipeline import TrainingOptions, export_trained

    data = tmp_path / "train.tsv"
    data.write_text("good film\t1\nbad film\t0\n", encoding="utf-8")
    out = tmp_path / "dist"
    out.write_text("a file")
    with pytest.raises(OutputError, match="is an existing file"):
        export_trained(ExportOptions(targets=("onnxruntime",), model=str(tiny_model_dir), out=str(out),
                                     progress=False), TrainingOptions(train_data=str(data)))


# -- E. killed exports: never loadable, cleaned up by the next export -----------------------------------------------
KILL_AT_COMMIT = """
import os, signal, sys
import edgesdk.bundle as bundle

real = bundle.read_bundle

def read_back_then_die(path, **kw):  # the staged manifest is written and reads back: the worst moment to die
    real(path, **kw)
    os.kill(os.getpid(), signal.SIGKILL)

bundle.read_bundle = read_back_then_die
from edgesdk.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _export_in_subprocess(tmp_path: Path, out: Path, model: Path, script: str | None = None):
    import os
    import subprocess
    import sys

    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(temp))
    args = ["export", "--target", "onnxruntime", "--precision", "fp32", "--model", str(model), "--out", str(out),
            "--no-progress"]
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "edgesdk.cli", *args]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE), temp


def _refused(path: Path) -> None:
    from edgesdk.errors import BundleError
    from edgesdk.runtime import load

    with pytest.raises(BundleError, match="unfinished bundle"):
        load(path)


def test_export_killed_after_the_staged_manifest_is_written(tmp_path, tiny_model_dir, monkeypatch, caplog):
    import shutil
    import signal
    import tempfile

    out = tmp_path / "dist"
    proc, temp = _export_in_subprocess(tmp_path, out, tiny_model_dir, KILL_AT_COMMIT)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    partial = next(out.glob(".*.partial-*"))
    assert (partial / "manifest.json").is_file()  # a complete-looking manifest whose hashes all match
    _refused(partial)
    done = run_cli("verify", str(partial))
    assert done.returncode == 2 and "unfinished bundle" in one_error_line(done)
    renamed = tmp_path / "renamed-by-hand"  # the marker still refuses it under an ordinary name
    shutil.copytree(partial, renamed)
    _refused(renamed)
    stale_temp = [p for p in temp.iterdir() if p.name.startswith("edgesdk-")]
    assert stale_temp and all((p / ".edgesdk-owner").is_file() for p in stale_temp)

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with caplog.at_level(logging.INFO, logger="edgesdk"):
        result = _export(out, tiny_model_dir)
    assert not partial.exists() and f"removing {partial}" in caplog.text
    assert not any(p.exists() for p in stale_temp) and "no longer running" in caplog.text
    assert not list(out.glob(".*")), list(out.iterdir())
    from edgesdk.runtime import load

    with load(result.bundles[0].path) as runner:
        assert runner.embed(["hello"]).shape == (1, 64)


def test_export_killed_from_outside_mid_way(tmp_path, tiny_model_dir, caplog):
    import signal
    import time

    out = tmp_path / "dist"
    proc, _ = _export_in_subprocess(tmp_path, out, tiny_model_dir)
    deadline = time.monotonic() + 600
    while not list(out.glob(".*.partial-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    partial = next(out.glob(".*.partial-*"))
    _refused(partial)
    with caplog.at_level(logging.INFO, logger="edgesdk"):
        _export(out, tiny_model_dir)
    assert not partial.exists() and "left by an interrupted export" in caplog.text


def test_a_staging_folder_killed_while_its_marker_was_written_is_removed(tmp_path):
    """The marker is written in one rename, so an export killed while writing it leaves a folder holding only the
    half-written marker.tmp (never an empty marker, whose owner nobody could tell): that folder is stale."""
    from edgesdk.bundle import staging_dir
    from edgesdk.outdir import clean_stale
    from edgesdk.runtime.unfinished import INCOMPLETE

    staging = staging_dir(tmp_path / "dist" / "m-onnxruntime-fp32")
    assert not list(staging.glob("*.tmp")) and (staging / INCOMPLETE).read_text()  # the marker is whole
    killed = tmp_path / "dist" / ".m-onnxruntime-int8.partial-0badf00d"
    killed.mkdir()
    (killed / (INCOMPLETE + ".tmp")).write_text('{"pi')
    clean_stale(tmp_path / "dist")
    assert not killed.exists() and staging.is_dir()


def test_a_live_exports_staging_folder_is_left_alone(tmp_path):
    from edgesdk.bundle import staging_dir
    from edgesdk.outdir import clean_stale

    staging = staging_dir(tmp_path / "dist" / "m-onnxruntime-fp32")  # owned by this (running) process
    old = tmp_path / "dist" / ".m-onnxruntime-fp32.old-12345678"  # a swap that never finished: always garbage
    old.mkdir()
    swapped_out = tmp_path / "dist" / ".m-onnxruntime-fp32.partial-9abcdef0"  # no marker, a manifest: garbage
    swapped_out.mkdir()
    (swapped_out / "manifest.json").write_text("{}")
    clean_stale(tmp_path / "dist")
    assert staging.is_dir() and not old.exists() and not swapped_out.exists()
    _refused(staging)


# -- B. build-engine runs no script from a bundle -----------------------------------------------------------------
# TensorRT cannot be installed here; a stand-in `trtexec` on PATH records the arguments it is given and writes the
# plan file, so the test shows what edgesdk would run (and what it would not) on a Jetson.
STAND_IN_TRTEXEC = """#!{python}
import json, sys
from pathlib import Path
if "--help" in sys.argv:
    print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help")
    sys.exit(0)
Path({log!r}).write_text(json.dumps(sys.argv[1:]))
plan = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--saveEngine="))
Path(plan).write_bytes(b"stand-in engine")
"""


def _with_stand_in_trtexec(tmp_path: Path) -> tuple[dict, Path]:
    import os
    import sys

    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "trtexec-args.json"
    trtexec = tools / "trtexec"
    trtexec.write_text(STAND_IN_TRTEXEC.format(python=sys.executable, log=str(log)))
    trtexec.chmod(0o755)
    return {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}, log


def _run_cli_env(env_extra: dict, *args: str):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_build_engine_runs_trtexec_from_the_manifest_never_the_bundle_script(jetson_fp16, tmp_path):
    import importlib.util
    import json
    import shutil

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT's Python API is installed: build-engine uses it, not trtexec")
    bundle = tmp_path / jetson_fp16.name
    shutil.copytree(jetson_fp16, bundle)
    marker = tmp_path / "script-ran"
    (bundle / "build_engine.sh").write_text(f"#!/usr/bin/env bash\ntouch {marker}\n")
    rehash(bundle)  # a consistent bundle whose script is hostile
    env, log = _with_stand_in_trtexec(tmp_path)
    done = _run_cli_env(env, "build-engine", str(bundle))
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    args = json.loads(log.read_text())
    settings = json.loads((bundle / "manifest.json").read_text())["target"]["settings"]["tensorrt"]
    assert f"--onnx={bundle / 'model.onnx'}" in args and "--fp16" in args
    assert "--maxShapes=" + ",".join(f"{n}:{'x'.join(map(str, d))}" for n, d in settings["shapes"]["max"].items()) \
        in args
    plan = next((bundle / "engines").glob("TensorRTv100300_*/model.plan"))
    assert f"engine: {plan}" in done.stdout


@pytest.mark.parametrize("field, value", [("precision_flags", ["--fp16", "--plugins=/tmp/evil.so"]),
                                          ("timing_cache", "../../etc/cache"), ("dla_core", "0; reboot")])
def test_build_engine_refuses_a_tampered_manifest_before_running_anything(jetson_fp16, tmp_path, field, value):
    import json
    import shutil

    bundle = tmp_path / jetson_fp16.name
    shutil.copytree(jetson_fp16, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target"]["settings"]["tensorrt"][field] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    rehash(bundle)
    env, log = _with_stand_in_trtexec(tmp_path)
    done = _run_cli_env(env, "build-engine", str(bundle))
    assert done.returncode == 2 and field in one_error_line(done)
    assert not log.exists()  # trtexec was never started


def test_build_engine_help_says_no_bundle_script_runs():
    done = run_cli("build-engine", "--help")
    assert "build_engine.sh is never run" in " ".join(done.stdout.split())


# -- F. signing -----------------------------------------------------------------------------------------------------
@pytest.fixture()
def keys(tmp_path):
    pytest.importorskip("cryptography")
    from edgesdk.runtime.signing import keygen

    return keygen(tmp_path / "keys"), keygen(tmp_path / "other-keys")


def test_signed_bundle_loads_with_its_key_and_unsigned_without_one(bundle_copy, keys):
    from edgesdk.errors import BundleError
    from edgesdk.runtime import load
    from edgesdk.runtime.signing import sign_bundle

    (private, public), (_, other_public) = keys
    with load(bundle_copy) as runner:  # no key required: an unsigned bundle still loads
        assert runner.embed(["a"]).shape == (1, 64)
    with pytest.raises(BundleError, match="is unsigned"):
        load(bundle_copy, trusted_keys=[public])
    sign_bundle(bundle_copy, private)
    with load(bundle_copy, trusted_keys=[public]) as runner:
        assert runner.embed(["a"]).shape == (1, 64)
    with load(bundle_copy, trusted_keys=[other_public, public.read_bytes()]):  # any trusted key, PEM bytes too
        pass
    with pytest.raises(BundleError, match="not signed by a trusted key"):
        load(bundle_copy, trusted_keys=[other_public])
    assert (private.stat().st_mode & 0o777) == 0o600


def test_a_re_hashed_forgery_passes_the_self_hash_but_not_the_signature(bundle_copy, keys):
    import json

    from edgesdk.errors import BundleError
    from edgesdk.runtime import load
    from edgesdk.runtime.signing import sign_bundle

    (private, public), _ = keys
    sign_bundle(bundle_copy, private)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["model"]["normalize"] = not manifest["model"]["normalize"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    rehash(bundle_copy)  # the unkeyed self-hash is recomputed: load() without a key accepts the forgery
    load(bundle_copy).close()
    with pytest.raises(BundleError, match="does not match its manifest"):
        load(bundle_copy, trusted_keys=[public])


def test_cli_keygen_sign_and_verify_with_a_key(bundle_copy, keys, tmp_path):
    (_, _), (other_private, other_public) = keys
    done = run_cli("keygen", "--out", str(tmp_path / "cli-keys"))
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "cli-keys" / "edgesdk-signing.key", tmp_path / "cli-keys" / "edgesdk-signing.pub"
    again = run_cli("keygen", "--out", str(tmp_path / "cli-keys"))
    assert again.returncode == 2 and "never overwrites" in one_error_line(again)
    unsigned = run_cli("verify", str(bundle_copy), "--key", str(public))
    assert unsigned.returncode == 2 and "unsigned" in one_error_line(unsigned)
    signed = run_cli("sign", str(bundle_copy), "--key", str(private))
    assert signed.returncode == 0 and "signed" in signed.stdout
    assert run_cli("verify", str(bundle_copy), "--key", str(public)).returncode == 0
    wrong = run_cli("verify", str(bundle_copy), "--key", str(other_public))
    assert wrong.returncode == 2 and "not signed by a trusted key" in one_error_line(wrong)
    assert run_cli("verify", str(bundle_copy)).returncode == 0  # no key asked for: the signature is not required


def test_export_train_data_ignores_a_planted_pickle_checkpoint(tiny_model_dir, tmp_path):
    from edgesdk.train.pipeline import _base_name, _slug

    marker = tmp_path / "pwned"
    data = tmp_path / "reviews.tsv"
    data.write_text("good film\t1\nbad film\t0\ngreat fun\t1\nawful mess\t0\n", encoding="utf-8")
    out = tmp_path / "dist"
    models = out / "models"
    models.mkdir(parents=True)
    name = f"{_base_name(tiny_model_dir)}-{_slug(str(data))}"
    (models / f".{name}.checkpoint.pt").write_bytes(pickle.dumps({"step": 1, "model": _Planted(marker)}))
    done = run_cli("export", "--target", "onnxruntime", "--precision", "fp32", "--model", str(tiny_model_dir),
                   "--train-data", str(data), "--epochs", "1", "--batch-size", "2", "--out", str(out),
                   "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    assert "a pickle checkpoint is never loaded" in done.stderr


def test_re_export_swaps_the_bundle_in_one_step(tmp_path, tiny_bundle):
    import shutil

    from edgesdk.bundle import finalize, staging_dir
    from edgesdk.runtime import read_bundle
    from edgesdk.swap import exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "which").write_text("a")
    (b / "which").write_text("b")
    if not exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here; the two-rename fallback is used")
    assert (a / "which").read_text() == "b" and (b / "which").read_text() == "a"
    final = tmp_path / "dist" / "m"
    manifest = read_bundle(tiny_bundle).manifest
    for generation in ("first", "second"):
        staging = staging_dir(final)
        for item in tiny_bundle.iterdir():
            if item.name != "manifest.json":
                (shutil.copytree if item.is_dir() else shutil.copyfile)(item, staging / item.name)
        (staging / "golden" / "texts.txt").write_text(generation)
        finalize(staging, final, manifest)
    assert (final / "golden" / "texts.txt").read_text() == "second"
    assert sorted(p.name for p in final.parent.iterdir()) == ["m"]  # no staging, .old- or marker left
    assert not (final / ".incomplete").exists()
