import json
import subprocess
import sys

from edgesdk.cli import main


def test_targets_json(capsys):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["exports"] for r in rows}["intel"] is True


def test_unknown_target_exits_2_with_one_error_line(capsys):
    assert main(["export", "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown target 'nope'")


def test_inspect_and_verify(tiny_bundle, capsys):
    assert main(["inspect", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "fidelity" in out and "input_ids" in out
    assert main(["verify", str(tiny_bundle)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_verify_tampered_bundle_exits_2(bundle_copy, capsys):
    (bundle_copy / "model.onnx").write_bytes(b"broken")
    assert main(["verify", str(bundle_copy)]) == 2
    assert "failed verification" in capsys.readouterr().err


def test_help_is_fast_and_light():
    code = "import sys, edgesdk.cli; edgesdk.cli.build_parser(); print(sorted(m for m in ('torch','onnx','openvino','nncf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
