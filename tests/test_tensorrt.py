"""Jetson/TensorRT target: explicit symmetric Q/DQ, int32 I/O, static compatibility check, build settings.
TensorRT itself is not installable here; tests that need it are marked and skip with the reason."""

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgesdk.api import ExportOptions, export
from edgesdk.backends.tensorrt import int32_integer_inputs, parse_script_shapes, softmax_fed_matmuls
from edgesdk.backends.tensorrt_check import check_model
from edgesdk.errors import BackendNotAvailableError
from edgesdk.runtime import load, read_bundle
from tests.conftest import write_profile

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def jetson_bundles(tmp_path_factory, tiny_model_dir):
    work = tmp_path_factory.mktemp("jetson")
    profile = write_profile(work / "tiny-jetson.toml", "jetson", name="tiny-jetson",
                            fidelity={"cosine_mean": 0.98, "cosine_min": 0.9}, quant={"samples": 32},
                            shapes={"min_shape": [1, 16], "opt_shape": [1, 64], "max_shape": [8, 128],
                                    "max_seq": 128})
    result = export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(work / "dist"),
                                  precisions=("int8", "fp16"), fidelity_samples=32, progress=False))
    return {b.precision: Path(b.path) for b in result.bundles}


def _constants(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_every_qdq_is_symmetric_int8_and_weights_are_per_output_channel(jetson_bundles):
    model = onnx.load(str(jetson_bundles["int8"] / "model.onnx"))
    consts = _constants(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 20
    for node in qdq:
        zp = consts[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
    consumers = {i: n for n in model.graph.node for i in n.input}
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in consts
                 and consumers.get(n.output[0]) is not None and consumers[n.output[0]].op_type == "MatMul"]
    assert weight_dq, "MatMul weights should be quantized"
    for node in weight_dq:
        weight, scale = consts[node.input[0]], consts[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert axis in (1, -1) and scale.size == weight.shape[1], node.name


def test_inputs_are_int32_and_check_is_clean(jetson_bundles):
    bundle = read_bundle(jetson_bundles["int8"])
    assert {i.dtype for i in bundle.manifest.inputs} == {"int32"}
    assert bundle.settings.tensorrt_compatibility == []
    assert check_model(onnx.load(str(jetson_bundles["int8"] / "model.onnx"))) == []


def test_manifest_records_memory_at_the_max_profile(jetson_bundles):
    memory = read_bundle(jetson_bundles["int8"]).manifest.memory_plan
    assert memory.shape == (8, 128) and memory.budget_mb == 8192 and memory.shared_with_cpu
    rows = memory.per_precision
    assert rows["int8"].weights_mb < rows["fp16"].weights_mb < rows["fp32"].weights_mb
    assert all(r.fits for r in rows.values()) and rows["fp32"].activations_mb > 0


def test_build_script_and_manifest_shapes_agree(jetson_bundles):
    for bundle in jetson_bundles.values():
        settings = read_bundle(bundle).settings.tensorrt
        script = (bundle / "build_engine.sh").read_text()
        shapes = {k: {n: list(d) for n, d in getattr(settings.shapes, k).items()} for k in ("min", "opt", "max")}
        assert parse_script_shapes(script) == shapes
        assert shapes["max"]["input_ids"] == [8, 128]
        for flag in settings.precision_flags:
            assert flag in script
    assert read_bundle(jetson_bundles["int8"]).settings.tensorrt.precision_flags == ("--int8", "--fp16")


def test_runner_falls_back_to_cpu_and_embeds(jetson_bundles, caplog):
    with caplog.at_level("INFO", logger="edgesdk"):
        runner = load(jetson_bundles["int8"], threads=1)
    assert "running on CPUExecutionProvider" in caplog.text
    assert runner.embed(["a jetson test"]).shape == (1, 64)


def _tiny_graph(extra_nodes=(), zero_point=0):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    inits = [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, dtype=np.int8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq"), *extra_nodes]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])


def test_profile_longer_than_the_model_is_refused(tmp_path, tiny_model_dir):
    from edgesdk.errors import EdgeSDKError

    profile = write_profile(tmp_path / "long.toml", "jetson", name="long")
    with pytest.raises(EdgeSDKError, match="max_shape sequence 256 is longer than the model's max length 128"):
        export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "d"),
                             precisions=("fp16",), fidelity_samples=16, progress=False))
    assert not any((tmp_path / "d").glob("*"))


def test_check_flags_a_planted_unsupported_op():
    planted = helper.make_node("Unique", ["x"], ["u"], name="planted_unique")
    findings = check_model(_tiny_graph([planted]))
    assert [(f.kind, f.where) for f in findings] == [("op", "planted_unique")]


def test_check_flags_a_planted_asymmetric_zero_point():
    findings = check_model(_tiny_graph(zero_point=3))
    assert {(f.kind, f.where) for f in findings} == {("zero_point", "q"), ("zero_point", "dq")}


def test_check_flags_int64_boundary_and_unprofiled_dims():
    model = _tiny_graph()
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "channels"
    kinds = {f.kind for f in check_model(model)}
    assert {"boundary_dtype", "dynamic_dim"} <= kinds


def test_int32_inputs_keep_the_graph_valid(tiny_model_dir, tmp_path):
    from edgesdk.frontends import load_source

    source = load_source(str(tiny_model_dir), tmp_path)  # the standard-op FP32 export (no ORT fusions)
    model = int32_integer_inputs(onnx.load(str(source.onnx_path)))
    onnx.checker.check_model(model)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT32}
    assert len(softmax_fed_matmuls(model)) == 2  # one P·V MatMul per layer of the 2-layer BERT


def test_build_engine_without_tensorrt_names_the_install(jetson_bundles):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here")
    from edgesdk.runtime.tensorrt_engine import build_engine

    with pytest.raises(BackendNotAvailableError, match="needs TensorRT"):
        build_engine(jetson_bundles["int8"])


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (it cannot be on these machines)")
def test_engine_builds_and_matches_onnx(jetson_bundles):
    from edgesdk.runtime.tensorrt_engine import build_engine

    plan = build_engine(jetson_bundles["fp16"])
    assert plan.is_file()
    assert load(jetson_bundles["fp16"]).embed(["engine"]).shape == (1, 64)
