"""edgesdk triton: golden config.pbtxt files, parsed with Triton's own model-config protobuf, and the Python-backend
models run in-process on real inputs (with a stand-in for triton_python_backend_utils, which only Triton ships).

No Triton server runs here: it cannot be installed on this machine (see README, Serving).
Regenerate the golden files with EDGESDK_REGEN_GOLDEN=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgesdk.errors import BundleError
from edgesdk.runtime import load
from edgesdk.runtime.manifest import manifest_digest
from edgesdk.serve.triton import TritonOptions, write_repository
from test_serve import TEXTS, classifier_bundle  # noqa: F401  (fixture)

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import json_format, text_format  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "triton"


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def bundle_of(tiny_export, backend: str) -> Path:
    return Path(next(b.path for b in tiny_export.bundles if b.backend == backend and b.precision == "fp32"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_export, classifier_bundle):  # noqa: F811
    out = tmp_path_factory.mktemp("triton-repo")
    written = write_repository([bundle_of(tiny_export, "onnxruntime"), bundle_of(tiny_export, "openvino"),
                                classifier_bundle], out, TritonOptions(max_batch=16, instances=2),
                               names=["tiny", "tiny_ov", "tiny_cls"])
    assert set(written) == {"tiny", "tiny_ov", "tiny_cls"}
    return out


def test_config_files_match_the_golden_files(repo):
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert len(configs) == 12
    for config in configs:
        golden = GOLDEN / f"{config.parent.name}.pbtxt"
        if os.environ.get("EDGESDK_REGEN_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(config.read_text())
        assert config.read_text() == golden.read_text(), f"{config.parent.name} differs from {golden}"


def test_every_config_parses_as_a_triton_model_config_and_the_ensemble_is_wired(repo):
    configs = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    assert configs["tiny_model"].platform == "onnxruntime_onnx"
    assert configs["tiny_ov_model"].backend == "openvino"
    assert configs["tiny_tokenize"].backend == configs["tiny_pool"].backend == "python"
    for name in ("tiny_model", "tiny_ov_model"):
        c = configs[name]
        assert c.max_batch_size == 16 and c.dynamic_batching.max_queue_delay_microseconds == 5000
        assert list(c.dynamic_batching.preferred_batch_size) == [4, 8, 16]
        assert c.instance_group[0].count == 2
        assert c.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert [i.name for i in c.input] == ["input_ids", "attention_mask", "token_type_ids"]
        assert list(c.output[0].dims) == [-1, 64]
    assert (repo / "tiny_model" / "1" / "model.onnx").is_file()
    assert {p.name for p in (repo / "tiny_ov_model" / "1").iterdir()} == {"model.xml", "model.bin"}
    for ensemble in ("tiny", "tiny_ov", "tiny_cls"):
        c = configs[ensemble]
        assert c.platform == "ensemble" and c.input[0].data_type == model_config_pb2.TYPE_STRING
        produced = {"TEXT"}
        for step in c.ensemble_scheduling.step:
            assert step.model_name in configs
            model = configs[step.model_name]
            assert set(step.input_map) == {i.name for i in model.input} and set(step.input_map.values()) <= produced
            assert set(step.output_map) <= {o.name for o in model.output}
            produced |= set(step.output_map.values())
        assert c.output[0].name in produced
    assert list(configs["tiny"].output[0].dims) == [64] and list(configs["tiny_cls"].output[0].dims) == [2]
    assert configs["tiny_cls_pool"].output[0].label_filename == "labels.txt"
    assert (repo / "tiny_cls_pool" / "labels.txt").read_text().split() == ["negative", "positive"]


# -- the Python-backend models, run in-process ------------------------------------------------------------
class StandInTensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class StandInResponse:
    def __init__(self, output_tensors, error=None):
        self._outputs = {t.name(): t for t in output_tensors}

    def output(self, name):
        return self._outputs[name].as_numpy()


class StandInRequest:
    def __init__(self, **arrays):
        self.tensors = {name: StandInTensor(name, a) for name, a in arrays.items()}


def stand_in_utils() -> types.ModuleType:
    """The few names of Triton's triton_python_backend_utils that the models use, for this test only."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = StandInTensor
    module.InferenceResponse = StandInResponse
    module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return module


def python_model(repo: Path, name: str, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in_utils())
    spec = importlib.util.spec_from_file_location(f"triton_{name}", repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = json_format.MessageToJson(parse(repo / name / "config.pbtxt"), preserving_proto_field_name=True)
    model.initialize({"model_config": config, "model_repository": str(repo / name), "model_version": "1",
                      "model_name": name})
    return model


def run_ensemble(repo: Path, name: str, texts: list[str], monkeypatch) -> np.ndarray:
    """tokenize (Python) -> the artefact in ONNX Runtime -> pool (Python), as the ensemble wires them."""
    import onnxruntime as ort

    tokenize, pool = python_model(repo, f"{name}_tokenize", monkeypatch), python_model(repo, f"{name}_pool",
                                                                                       monkeypatch)
    text = np.array([[t.encode()] for t in texts], dtype=object)  # Triton hands strings over as bytes
    feeds_reply = tokenize.execute([StandInRequest(TEXT=text)])[0]
    config = parse(repo / f"{name}_model" / "config.pbtxt")
    feeds = {i.name: feeds_reply.output(i.name) for i in config.input}
    session = ort.InferenceSession(str(repo / f"{name}_model" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    states_name = config.output[0].name
    states = session.run([states_name], feeds)[0]
    pool_inputs = {states_name: states}
    if any(i.name == "attention_mask" for i in parse(repo / f"{name}_pool" / "config.pbtxt").input):
        pool_inputs["attention_mask"] = feeds["attention_mask"]
    out_name = parse(repo / name / "config.pbtxt").output[0].name
    return pool.execute([StandInRequest(**pool_inputs)])[0].output(out_name)


def test_python_backend_models_reproduce_the_runners_embeddings(repo, tiny_export, monkeypatch):
    texts = TEXTS + ["word " * 300]  # longer than max_length: truncated like the runner
    vectors = run_ensemble(repo, "tiny", texts, monkeypatch)
    with load(bundle_of(tiny_export, "onnxruntime"), threads=1) as runner:
        expected = runner.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 64)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)


def test_python_backend_models_reproduce_the_runners_probabilities(repo, classifier_bundle, monkeypatch):  # noqa: F811
    scores = run_ensemble(repo, "tiny_cls", TEXTS, monkeypatch)
    with load(classifier_bundle, threads=1) as runner:
        expected = runner.classify(TEXTS).probabilities
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


# -- artefact kinds ----------------------------------------------------------------------------------------
def test_a_built_engine_becomes_a_tensorrt_plan_model_on_the_gpu(jetson_fp16, tmp_path):
    import shutil

    bundle_copy = tmp_path / jetson_fp16.name
    shutil.copytree(jetson_fp16, bundle_copy)
    engine = bundle_copy / "engines" / "10.3.0_Orin" / "model.plan"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"engine bytes")  # not a real engine: only the repository layout is checked here
    write_repository([bundle_copy], tmp_path / "repo", names=["tiny"])
    config = parse(tmp_path / "repo" / "tiny_model" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "tiny_model" / "1" / "model.plan").read_bytes() == b"engine bytes"


def test_a_tflite_bundle_is_refused_naming_what_triton_takes(bundle_copy, tmp_path):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artefact"]["format"] = "tflite"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="Triton repositories take ONNX, OpenVINO IR or a built TensorRT engine"):
        write_repository([bundle_copy], tmp_path / "repo")


def test_cli_writes_a_repository(tiny_bundle, tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "edgesdk.cli", "triton", str(tiny_bundle), "--out",
                           str(tmp_path / "repo")], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    name = tiny_bundle.name
    assert f"{name}: {name}_model, {name}_tokenize, {name}_pool, {name}" in done.stdout
    assert parse(tmp_path / "repo" / name / "config.pbtxt").platform == "ensemble"
    shutil.rmtree(tmp_path / "repo")
