"""edgesdk.plan: liveness arithmetic on hand-built graphs, shape binding, errors, JSON, and one real --check."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.errors import EdgeSDKError, InputError, ModelSourceError, ProfileError
from edgesdk.memory.liveness import Graph, Op, analyse, offset_plan, reuse_sets

MB = 2**20


def test_chain_peak_is_two_neighbours():
    # a -> b -> c -> d: each op holds its input and its output; sizes 10, 30, 20, 5
    ops = (Op("A", "X", ("in",), ("a",)), Op("B", "X", ("a",), ("b",)), Op("C", "X", ("b",), ("c",)),
           Op("D", "X", ("c",), ("d",)))
    g = Graph(ops, {"a": 10, "b": 30, "c": 20, "d": 5}, outputs=("d",))
    result = analyse(g)
    assert result.steps == (10, 40, 50, 25)
    assert result.peak_bytes == 50 and result.peak_op == "C"
    assert result.allocated_bytes == 65


def test_diamond_keeps_the_fork_alive_until_the_join():
    # x -> (l, r) -> join: x dies after R (its last consumer), l lives until the join
    ops = (Op("X", "X", ("in",), ("x",)), Op("L", "X", ("x",), ("l",)), Op("R", "X", ("x",), ("r",)),
           Op("J", "Add", ("l", "r"), ("j",)))
    g = Graph(ops, {"x": 8, "l": 4, "r": 16, "j": 2}, outputs=("j",))
    assert analyse(g).steps == (8, 12, 28, 22)  # during J: l + r + j
    assert analyse(g).peak_bytes == 28


def test_views_alias_their_input_and_extend_its_life():
    ops = (Op("A", "X", ("in",), ("a",)), Op("V", "Reshape", ("a",), ("v",), views=True),
           Op("B", "X", ("v",), ("b",)))
    g = Graph(ops, {"a": 10, "v": 10, "b": 3}, outputs=("b",))
    assert analyse(g).steps == (10, 10, 13)


def test_allocators_bound_the_ideal_peak():
    ops = (Op("A", "X", (), ("a",)), Op("B", "X", ("a",), ("b",)), Op("C", "X", ("b",), ("c",)))
    g = Graph(ops, {"a": 4, "b": 1, "c": 4}, outputs=("c",))
    assert analyse(g).peak_bytes == 5
    assert reuse_sets(g) == 5  # c reuses a's set
    assert offset_plan(g) == 5  # c fits a's freed gap


def _diamond_model(dim_names=("batch", "sequence")):
    """input [batch, seq] ids -> Gather(table 100x8) -> Relu / Sigmoid -> Add -> MatMul(8x4) -> output."""
    table = numpy_helper.from_array(np.zeros((100, 8), np.float32), "table")
    weight = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
             helper.make_node("Relu", ["emb"], ["left"], name="left"),
             helper.make_node("Sigmoid", ["emb"], ["right"], name="right"),
             helper.make_node("Add", ["left", "right"], ["sum"], name="join"),
             helper.make_node("MatMul", ["sum", "w"], ["out"], name="proj")]
    graph = helper.make_graph(nodes, "diamond",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, list(dim_names))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [dim_names[0], dim_names[1], 4])],
                              initializer=[table, weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bound_onnx_diamond_exact_bytes():
    from edgesdk.memory.onnx_graph import bind

    bound = bind(_diamond_model(), batch=2, seq=3)
    tokens = 2 * 3
    assert bound.tensors["emb"].elems == tokens * 8
    assert bound.inputs["ids"].elems == tokens
    # emb + left + right alive while 'right' runs; then left + right + sum during join
    assert analyse(bound.graph()).peak_bytes == 3 * tokens * 8 * 4
    from edgesdk.memory.estimate import weight_bytes

    assert weight_bytes(bound.weights, "as-is").to_dict() == {"embeddings": 3200, "matmul": 128, "quant_params": 0,
                                                              "other": 0, "total": 3328}
    int8 = weight_bytes(bound.weights, "int8")
    assert (int8.embeddings, int8.matmul) == (800 + 4 * 100, 32 + 4 * 4)
    assert weight_bytes(bound.weights, "fp16").total == 3328 // 2


def test_scaled_graph_extrapolates_exactly():
    from edgesdk.memory.estimate import ScaledGraph
    from edgesdk.memory.onnx_graph import bind

    model = _diamond_model()
    scaled = ScaledGraph.from_probes(bind(model, 1, 8), bind(model, 2, 8), bind(model, 1, 4))
    direct = bind(model, 5, 7)
    assert analyse(scaled.graph(5, 7, None)).peak_bytes == analyse(direct.graph()).peak_bytes
    assert scaled.input_bytes(5, 7) == 5 * 7 * 8


def test_unnamed_dynamic_axes_bind_by_position():
    from edgesdk.memory.onnx_graph import bind

    assert bind(_diamond_model(("", "")), batch=3, seq=5).tensors["out"].elems == 3 * 5 * 4


def test_a_graph_without_shapes_is_a_clear_error():
    from edgesdk.memory.onnx_graph import bind

    model = _diamond_model()
    model.graph.node.append(helper.make_node("Mystery", ["out"], ["mystery_out"], name="m", domain="vendor.x"))
    model.opset_import.append(helper.make_opsetid("vendor.x", 1))
    with pytest.raises(ModelSourceError, match="without a static shape.*mystery_out"):
        bind(model, 1, 4)


@pytest.mark.parametrize("batch,seq,needle", [(0, 128, "--batch"), (1, -5, "--seq"), (True, 8, "--batch"),
                                               (2.5, 8, "--batch")])
def test_bad_shapes_name_the_fix(batch, seq, needle):
    from edgesdk.plan.planner import PlanOptions, plan

    with pytest.raises(InputError, match=needle):
        plan(PlanOptions(target="onnxruntime", model="unused.onnx", batch=batch, seq=seq))


def test_unknown_target_and_precision(tmp_path):
    from edgesdk.plan.planner import PlanOptions, plan

    path = tmp_path / "m.onnx"
    onnx.save(_diamond_model(), path)
    with pytest.raises(ProfileError, match="unknown target 'mars'"):
        plan(PlanOptions(target="mars", model=str(path)))
    with pytest.raises(InputError, match="accepts int8, fp32, int4"):
        plan(PlanOptions(target="onnxruntime", model=str(path), precisions=("fp16",)))
    with pytest.raises(ModelSourceError, match="does not exist"):
        plan(PlanOptions(target="onnxruntime", model=str(tmp_path / "nope.onnx")))


def test_plan_json_is_stable(tmp_path, capsys):
    import argparse

    from edgesdk.plan.cli import add_parser

    path = tmp_path / "m.onnx"
    onnx.save(_diamond_model(), path)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "plan.json"
    args = parser.parse_args(["plan", "--model", str(path), "--target", "android", "--batch", "4", "--seq", "16",
                              "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "recommendation: ptq-static" in text and "int4  not supported" in text
    data = json.loads(out.read_text())
    assert data["schema"] == "edgesdk.plan/1" and data["mode"] == "plan"
    assert [p["precision"] for p in data["precisions"]] == ["fp32", "fp16", "int8", "int4"]
    fp32, int8 = data["precisions"][0], data["precisions"][2]
    assert fp32["weights"]["total"] == 3328 and fp32["activations"] == 3 * 4 * 16 * 8 * 4
    assert int8["activation_itemsize"] == 1  # android is full-integer
    assert fp32["fits"] is True and fp32["max_batch"] > 4 and data["target"]["budget_bytes"] == 1024 * MB
    assert data["recommendation"]["strategy"] == "ptq-static"


def test_check_measures_a_real_bundle(tiny_export, capsys):
    from edgesdk.plan.planner import CheckOptions, check
    from edgesdk.plan.report import check_dict

    path = next(b.path for b in tiny_export.bundles if b.backend == "onnxruntime" and b.precision == "fp32")
    result = check(CheckOptions(path, batch=2, seq=16, runs=1))
    data = check_dict(result)
    assert data["schema"] == "edgesdk.plan/1" and data["mode"] == "check"
    assert data["measured"]["increase"] > 0 and data["measured"]["rss_idle"] > 0
    assert data["estimate"]["weights"]["embeddings"] >= 30522 * 64 * 4
    with pytest.raises(InputError, match="--runs"):
        check(CheckOptions(path, runs=0))


def test_all_errors_are_edgesdk_errors():
    assert issubclass(InputError, EdgeSDKError) and issubclass(ModelSourceError, EdgeSDKError)
