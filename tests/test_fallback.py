"""The accuracy-aware fallback loop on a 2-layer random BERT: measured sensitivity, layers back to float, typed failure."""

from pathlib import Path

import pytest

from edgesdk.api import ExportOptions, export
from edgesdk.errors import FidelityError
from edgesdk.quant.fallback import schedule
from edgesdk.runtime import read_bundle
from tests.conftest import write_profile


def _export(tiny_model_dir, tmp_path, cosine_mean, cosine_min):
    tmp_path.mkdir(parents=True, exist_ok=True)
    # s8 weights: with the default u8 ones the random 2-layer BERT's int8 is within 2e-5 of FP32 (cosine to six
    # digits), so holding layers back has nothing measurable to recover
    profile = write_profile(tmp_path / "tight.toml", "onnxruntime", name="tight",
                            fidelity={"cosine_mean": cosine_mean, "cosine_min": cosine_min}, quant={"samples": 32},
                            device={"weights": "s8"})
    return export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "dist"),
                                precisions=("int8",), fidelity_samples=32, progress=False))


def test_schedule_doubles_then_takes_all():
    assert schedule(0) == []
    assert schedule(5) == [1, 2, 4, 5]
    assert schedule(16) == [1, 2, 4, 8, 16]


def test_impossible_budget_then_a_tight_one(tiny_model_dir, tmp_path):
    """Impossible: the typed error with every attempt. Tight (just what one retry reached): layers kept in float."""
    with pytest.raises(FidelityError, match="cannot be met: the best reached was cosine mean") as info:
        _export(tiny_model_dir, tmp_path / "impossible", 1.0, 1.0)
    assert "Loosen [fidelity]" in str(info.value)
    assert not any((tmp_path / "impossible" / "dist").glob("*")), "a failed export leaves nothing behind"
    attempts = info.value.attempts
    assert [a["kept_in_float"] for a in attempts] == [0, *schedule(attempts[-1]["kept_in_float"])]
    first = attempts[0]["cosine_min"]
    better = [a for a in attempts[1:] if a["cosine_min"] > first]
    assert better, f"returning measured-sensitive layers to float never helped: {attempts}"
    goal = better[0]

    result = _export(tiny_model_dir, tmp_path / "tight", 0.5, goal["cosine_min"]).bundles[0]
    assert len(result.kept_in_float) == goal["kept_in_float"]
    assert result.fidelity["cosine_min"] >= goal["cosine_min"] > first
    manifest = read_bundle(Path(result.path)).manifest
    kept = manifest.quantization.kept_in_float
    assert [k.rank for k in kept] == list(range(1, len(kept) + 1))
    assert all("budget" in k.reason for k in kept)
    recorded = manifest.fidelity.attempts
    assert recorded[0]["kept_in_float"] == 0 and recorded[0]["cosine_min"] < goal["cosine_min"]


def test_dynamic_mode_fallback_builds_its_probe_calibration(tiny_model_dir, tmp_path):
    """Dynamic INT8 needs no calibration, but a missed budget needs a sensitivity probe: it must get one."""
    profile = write_profile(tmp_path / "dyn.toml", "onnxruntime", name="dyn", quant={"samples": 16, "mode": "dynamic"},
                            fidelity={"cosine_mean": 1.0, "cosine_min": 1.0})
    with pytest.raises(FidelityError) as info:
        export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "dist"),
                             precisions=("int8",), fidelity_samples=16, progress=False))
    assert len(info.value.attempts) > 1


def test_classifier_budget_is_top1_agreement_not_the_worst_cosine():
    import numpy as np

    from edgesdk.evaluate import fidelity
    from edgesdk.profiles import FidelityBudget

    reference = np.array([[0.9, 0.1]] * 98 + [[0.6, 0.4], [0.55, 0.45]])
    candidate = reference.copy()
    candidate[-1] = [0.2, 0.8]  # one flip near the boundary: cosine 0.80 for that text
    fid = fidelity(candidate, reference, "fp32", classification=True)
    assert fid.top1_agreement == 0.99 and fid.cosine_min < 0.81
    assert fid.meets(FidelityBudget(cosine_mean=0.99, cosine_min=0.95, top1_agreement_min=0.97))
    assert not fid.meets(FidelityBudget(cosine_mean=0.99, cosine_min=0.95, top1_agreement_min=0.995))
    embedding = fidelity(candidate, reference, "fp32")
    assert embedding.top1_agreement is None
    assert not embedding.meets(FidelityBudget(cosine_mean=0.99, cosine_min=0.95))


def test_the_loop_stops_when_attempts_stop_improving_and_says_why():
    """A build whose fidelity no layer choice changes: the loop gives up after PATIENCE flat attempts, not 8."""
    from types import SimpleNamespace

    from edgesdk.evaluate import Fidelity
    from edgesdk.profiles import load_profile
    from edgesdk.quant.fallback import PATIENCE, run_with_fallback

    flat = Fidelity(n=10, cosine_mean=0.9, cosine_min=0.5, cosine_p01=0.5, max_abs_error=1.0, reference="r")
    builds = []

    def build(keep):
        builds.append(keep)
        return "staging", "artefact", flat

    ranking = [SimpleNamespace(node=f"n{i}", added_error=0.1) for i in range(64)]
    with pytest.raises(FidelityError, match="stopped early") as info:
        run_with_fallback(build, load_profile("intel"), lambda: ranking, lambda staging: None)
    assert len(builds) == 1 + PATIENCE and len(info.value.attempts) == 1 + PATIENCE


def test_classifiers_are_budgeted_on_top1_agreement_not_probability_cosine():
    from edgesdk.evaluate import Fidelity
    from edgesdk.profiles import load_profile

    budget = load_profile("android").fidelity
    kept_labels = Fidelity(n=200, cosine_mean=0.9869, cosine_min=0.6, cosine_p01=0.7, max_abs_error=0.3,
                           reference="r", top1_agreement=0.9766)
    assert kept_labels.meets(budget)
    assert not Fidelity(**{**kept_labels.to_dict(), "top1_agreement": 0.95}).meets(budget)


def test_the_ranking_offers_only_layers_the_probe_quantized():
    """A MatMul the quantizer left float (here an activation x activation product with no DequantizeLinear, as
    NNCF leaves the Softmax-fed attention MatMul) is no fallback candidate: holding it back rebuilds the same
    bytes. A QDQ-fed MatMul and a node quantize_dynamic replaced (absent from the probe) are."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.quant.sensitivity import quantized_in

    w = numpy_helper.from_array(np.zeros((4, 4), np.int8), "w_q")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "s"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"], name="qdq_matmul"),
        helper.make_node("MatMul", ["y", "x"], ["p"], name="float_matmul"),  # one input not dequantized
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [4, 4])],
                              [w, numpy_helper.from_array(np.float32(0.1), "s"),
                               numpy_helper.from_array(np.uint8(128), "z")])
    probe = helper.make_model(graph)
    assert quantized_in(probe, ["qdq_matmul", "float_matmul", "replaced_by_integer_nodes"]) == {
        "qdq_matmul", "replaced_by_integer_nodes"}
