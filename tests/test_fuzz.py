"""Fuzzed manifests and profiles: whatever a hostile or broken file holds, the readers raise an EdgeSDKError or work.

Each manifest case mutates one place of a real bundle's manifest (delete a key, put any JSON value there, wrap
it in a list), re-hashes it as a forger would, and loads the bundle; a bundle that still loads must also embed.
Each profile case does the same to a bundled profile's table, and a byte-level case damages the TOML text.
CI runs a small profile; `EDGESDK_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py -s` runs more and prints the tally.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tomllib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesdk.errors import EdgeSDKError
from edgesdk.profiles import _build, _targets_dir, load_profile
from edgesdk.runtime import load
from edgesdk.runtime.manifest import manifest_digest

EXAMPLES = int(os.environ.get("EDGESDK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TALLY: Counter = Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(["../../etc/passwd", "/etc/hostname", "model.onnx", "", "fp32", "onnxruntime", "mean"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


def _places(value, prefix=()):
    """Every path into a JSON tree (dict keys and list indexes)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _places(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _places(v, prefix + (i,))


def _mutate(data, place, how, value):
    if not place:
        return value if how == "replace" else data
    parent = data
    for key in place[:-1]:
        parent = parent[key]
    key = place[-1]
    if how == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif how == "wrap":
        parent[key] = [parent[key]]
    else:
        parent[key] = value
    return data


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle, tmp_path_factory):
    target = tmp_path_factory.mktemp("fuzz") / tiny_bundle.name
    shutil.copytree(tiny_bundle, target)
    original = json.loads((target / "manifest.json").read_text())
    return target, original


def _outcome(action) -> str:
    try:
        action()
        return "loaded"
    except EdgeSDKError as exc:
        return type(exc).__name__


@FUZZ
@given(data=st.data())
def test_fuzzed_manifests_raise_only_edgesdk_errors(fuzz_bundle, data):
    folder, original = fuzz_bundle
    manifest = json.loads(json.dumps(original))
    places = [p for p in _places(manifest) if p and p != ("manifest_sha256",)]
    place = data.draw(st.sampled_from(places))
    how = data.draw(st.sampled_from(["replace", "delete", "wrap"]))
    manifest = _mutate(manifest, place, how, data.draw(json_values))
    if isinstance(manifest, dict):
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    def run():
        with load(folder, threads=1) as runner:
            if runner.task == "embedding":
                vectors = runner.embed(["a fuzzed bundle", "ok"])
                assert vectors.shape[0] == 2 and all(math.isfinite(float(x)) for x in vectors.ravel()[:8])
            else:
                runner.classify(["a fuzzed bundle"])

    TALLY[f"manifest {_outcome(run)}"] += 1


@FUZZ
@given(data=st.data())
def test_fuzzed_profiles_raise_only_profile_errors(data):
    name = data.draw(st.sampled_from(["intel", "onnxruntime", "android", "jetson"]))
    table = tomllib.loads((_targets_dir() / f"{name}.toml").read_text())
    places = [p for p in _places(table) if p]
    place = data.draw(st.sampled_from(places))
    how = data.draw(st.sampled_from(["replace", "delete", "wrap"]))
    table = _mutate(table, place, how, data.draw(json_values))
    TALLY[f"profile {_outcome(lambda: _build(table, f'fuzz:{name}', '0' * 64))}"] += 1


@FUZZ
@given(data=st.data())
def test_damaged_profile_text_raises_only_profile_errors(tmp_path_factory, data):
    name = data.draw(st.sampled_from(["intel", "android", "jetson"]))
    raw = bytearray((_targets_dir() / f"{name}.toml").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("profile") / "damaged.toml"
    path.write_bytes(bytes(raw))
    TALLY[f"profile-bytes {_outcome(lambda: load_profile(str(path)))}"] += 1


def test_report_the_tally():
    """Prints what the fuzzers saw (with -s); the assertion is that they ran."""
    print("\nfuzz tally:", dict(sorted(TALLY.items())))
    assert sum(TALLY.values()) >= 3 * EXAMPLES
