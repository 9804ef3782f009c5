import re

import pytest

from edgesdk.errors import BackendNotAvailableError, ProfileError
from edgesdk.profiles import bundled_profiles, load_profile
from tests.conftest import write_profile


def test_every_bundled_profile_loads_and_is_consistent():
    names = bundled_profiles()
    assert {"intel", "onnxruntime", "jetson", "android"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert set(profile.default_precisions) <= set(profile.precisions)
        assert len(profile.content_sha256) == 64


def test_tensorrt_profile_requires_symmetric_activations():
    q = load_profile("jetson").quant
    assert q.activation_symmetric and q.activation_symmetric_required


def test_unknown_target_lists_the_bundled_ones():
    with pytest.raises(ProfileError, match="unknown target 'nope'.*intel"):
        load_profile("nope")


def test_user_profile_file(tmp_path):
    path = write_profile(tmp_path / "board.toml", "intel", name="board")
    assert load_profile(str(path)).name == "board"


def test_unknown_key_is_named(tmp_path):
    path = write_profile(tmp_path / "bad.toml", "intel", quant={"colour": "red"})
    with pytest.raises(ProfileError, match="quant.colour"):
        load_profile(str(path))


@pytest.mark.parametrize("section,values,needle", [
    ("backend", "coreml", "backend"),
    ("quant", {"calibration_method": "magic"}, "calibration_method"),
    ("quant", {"samples": "many"}, "whole number"),
    ("precisions", ["int3"], "int3"),
])
def test_bad_values_are_named(tmp_path, section, values, needle):
    path = write_profile(tmp_path / "bad.toml", "intel", **{section: values})
    with pytest.raises(ProfileError, match=needle):
        load_profile(str(path))


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "missing.toml"))


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(path))


def test_an_unknown_backend_is_named_with_the_known_ones(tmp_path):
    from edgesdk.backends import backend
    from edgesdk.runtime.registry import runtime_backend

    with pytest.raises(BackendNotAvailableError, match="no runner for backend 'coreml'.*onnxruntime"):
        runtime_backend("coreml")
    with pytest.raises(BackendNotAvailableError, match="no export backend 'coreml'.*openvino"):
        backend("coreml")
    path = write_profile(tmp_path / "x.toml", "intel", backend="coreml")
    with pytest.raises(ProfileError, match="'backend' = 'coreml'.*tensorrt"):
        load_profile(str(path))


@pytest.mark.parametrize("sections, field", [
    ({"name": ""}, "'name'"), ({"name": "x/../../victim"}, "'name'"), ({"default_precisions": []}, "default_precisions"),
    ({"precisions": []}, "'precisions'"), ({"shapes": {"max_seq": -155}}, "shapes.max_seq"),
    ({"shapes": {"seq": 0}}, "shapes.seq"), ({"shapes": {"min_shape": []}}, "shapes.min_shape"),
    ({"shapes": {"max_shape": ["a", "b"]}}, "shapes.max_shape"), ({"quant": {"float_ops": [429]}}, "quant.float_ops"),
    ({"device": {"opset": 0}}, "device.opset"), ({"memory": {"budget_mb": -50}}, "memory.budget_mb"),
    ({"fidelity": {"cosine_min": True}}, "fidelity.cosine_min"), ({"device": {"delegates": ["nnapi"]}}, "device"),
    ({"shapes": {"policy": "static"}}, "shapes.policy"),
])
def test_profile_fields_are_validated_one_by_one(tmp_path, sections, field):
    path = write_profile(tmp_path / "bad.toml", "intel", **sections)
    with pytest.raises(ProfileError, match=re.escape(field)):
        load_profile(str(path))


def test_device_tables_are_the_backends_own(tmp_path):
    assert load_profile("android").device.delegates == ("nnapi", "gpu", "xnnpack")
    assert load_profile("jetson").device.workspace_mb == 1024
    bad = write_profile(tmp_path / "bad.toml", "android", device={"dla_core": 0})
    with pytest.raises(ProfileError, match="'device.dla_core' is not a known key; allowed: delegates, device"):
        load_profile(str(bad))


def test_a_profile_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"\nbackend = "openvino"\n'.encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(str(path))


def test_profiles_and_texts_ship_inside_the_wheel(tmp_path):
    """A wheel install must find the profiles and the packaged texts (they live outside edgesdk/ in the repo)."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("edgesdk-*.whl"))).namelist()
    assert {f"edgesdk/targets/{n}.toml" for n in bundled_profiles()} <= set(names)
    assert {"edgesdk/quant/texts/calibration.txt", "edgesdk/quant/texts/heldout.txt"} <= set(names)


def test_a_profile_can_be_reached_again_by_its_reference(tmp_path):
    assert load_profile("jetson").reference == "jetson"
    path = write_profile(tmp_path / "jetson.toml", "jetson", name="jetson")  # same name, a user's file
    assert load_profile(str(path)).reference == str(path)
    assert load_profile(load_profile(str(path)).reference).source == str(path)


def test_device_overrides_reach_only_the_backends_that_have_the_field():
    from edgesdk.api import ExportOptions, _plan
    from edgesdk.errors import InputError

    plans = _plan(ExportOptions(targets=("jetson", "intel"), device=(("workspace_mb", 2048),)))
    by_target = {p.name: p for p, _, _ in plans}
    assert by_target["jetson"].device.workspace_mb == 2048 and not hasattr(by_target["intel"].device, "workspace_mb")
    with pytest.raises(InputError, match="'nope' applies to none of the targets"):
        _plan(ExportOptions(targets=("intel",), device=(("nope", 1),)))
    with pytest.raises(ProfileError, match="'device.workspace_mb' = -1 is out of range"):
        _plan(ExportOptions(targets=("jetson",), device=(("workspace_mb", -1),)))


def test_batch_shapes_need_a_built_length_and_a_backend_that_builds_them(tmp_path):
    path = write_profile(tmp_path / "ok.toml", "android", name="ok",
                         shapes={"buckets": [16, 128], "batch_shapes": [[8, 16], [4, 128]]})
    shapes = load_profile(str(path)).shapes
    assert shapes.static_shapes() == ((1, 16), (1, 128), (4, 128), (8, 16))
    assert shapes.planning_shape() == (4, 128)  # the most tokens the device is asked to hold at once
    for bad, needle in (([[8, 20]], r"batch_shapes entry \[8, 20\].*\[16, 128\]"),
                        ([[1, 16]], r"batch from 2"), ([[8, 16], [8, 16]], "repeats")):
        path = write_profile(tmp_path / "bad.toml", "android", shapes={"buckets": [16, 128], "batch_shapes": bad})
        with pytest.raises(ProfileError, match=needle):
            load_profile(str(path))
    path = write_profile(tmp_path / "intel.toml", "intel", shapes={"batch_shapes": [[8, 128]]})
    with pytest.raises(ProfileError, match="batch_shapes.*backend does not.*'dynamic'.*use tflite"):
        load_profile(str(path))
