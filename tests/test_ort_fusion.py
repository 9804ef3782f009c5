"""ORT transformer fusions for the onnxruntime target, dynamic INT8 on the fused graph (QAttention), and the
dynamic-native sensitivity probe, on the 2-layer random BERT (2 heads, hidden 64)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_profile

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory, tiny_model_dir):
    from edgesdk.frontends import load_source

    return load_source(str(tiny_model_dir), tmp_path_factory.mktemp("tiny-source"), None, opset=17)


def test_heads_and_hidden_read_from_the_graph(tiny_source):
    import onnx

    from edgesdk.backends.ort_fusion import heads_and_hidden

    assert heads_and_hidden(onnx.load(str(tiny_source.onnx_path))) == (2, 64)


def test_fusion_matches_every_attention_and_maps_qkv(tiny_source, tmp_path):
    from edgesdk.backends.ort_fusion import fuse

    fusion = fuse(tiny_source.onnx_path, tmp_path / "fused.onnx")
    assert fusion.applied.get("Attention") == 2, fusion.applied
    assert fusion.applied.get("SkipLayerNormalization") == 4, fusion.applied
    assert fusion.absorbed["/model/encoder/layer.0/attention/self/query/MatMul"] == "Attention_0"
    assert fusion.absorbed["/model/encoder/layer.1/attention/self/value/MatMul"] == "Attention_1"
    assert len(fusion.absorbed) == 6


def test_fusion_can_leave_layer_norms_standard(tiny_source, tmp_path):
    """skip_layer_norm=False: Attention still fuses; each residual Add + LayerNormalization stays standard ops and
    computes what the fused SkipLayerNormalization does."""
    from edgesdk.backends.ort_fusion import fuse

    fused = fuse(tiny_source.onnx_path, tmp_path / "sln.onnx")
    plain = fuse(tiny_source.onnx_path, tmp_path / "plain.onnx", skip_layer_norm=False)
    assert plain.applied.get("Attention") == 2 and "SkipLayerNormalization" not in plain.applied, plain.applied
    assert plain.applied.get("LayerNormalization") == 4, plain.applied
    feeds = {"input_ids": np.arange(1000, 1032).reshape(2, 16), "attention_mask": np.ones((2, 16), np.int64),
             "token_type_ids": np.zeros((2, 16), np.int64)}
    feeds = {k: v for k, v in feeds.items() if k in tiny_source.input_names}
    ref = _ort(tmp_path / "sln.onnx").run(None, feeds)[0]
    got = _ort(tmp_path / "plain.onnx", ["SkipLayerNormFusion"]).run(None, feeds)[0]
    assert fused.applied.get("SkipLayerNormalization") == 4 and np.abs(ref - got).max() < 1e-4


def _ort(path, disabled_optimizers=()):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def test_fused_graph_computes_what_the_source_computes(tiny_source, tmp_path):
    from edgesdk.backends.ort_fusion import fuse

    fuse(tiny_source.onnx_path, tmp_path / "fused.onnx")
    rng = np.random.default_rng(0)
    mask = np.ones((2, 24), np.int64)
    mask[1, 10:] = 0  # a padded row: the mask must still be honoured after fusion
    feeds = {"input_ids": rng.integers(1000, 2000, (2, 24)), "attention_mask": mask,
             "token_type_ids": np.zeros((2, 24), np.int64)}
    feeds = {k: v for k, v in feeds.items() if k in tiny_source.input_names}
    ref, got = (_ort(p).run(None, feeds)[0] for p in (tiny_source.onnx_path, tmp_path / "fused.onnx"))
    assert np.abs(ref - got)[mask.astype(bool)].max() < 1e-4


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory, tiny_model_dir):
    from edgesdk.api import ExportOptions, export
    from edgesdk.quant import QuantOverrides

    work = tmp_path_factory.mktemp("dyn-export")
    profile = write_profile(work / "tiny-ort.toml", "onnxruntime", name="tiny-ort",
                            fidelity={"cosine_mean": 0.9, "cosine_min": 0.5}, quant={"samples": 16})
    return export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(work / "dist"),
                                precisions=("fp32", "int8"), fidelity_samples=32, progress=False,
                                quant=QuantOverrides(mode="dynamic")))


def _decisions(result, precision):
    path = next(b.path for b in result.bundles if b.precision == precision)
    return json.loads((Path(path) / "manifest.json").read_text())["quantization"]["decisions"]


def test_dynamic_int8_runs_qattention_on_the_fused_graph(dynamic_export):
    decisions = _decisions(dynamic_export, "int8")
    assert decisions["fusion"]["applied"]["Attention"] == 2
    kernels = decisions["kernels"]
    assert kernels["by_op"].get("QAttention") == 2, kernels
    assert kernels["float_matmuls"] == 0 and kernels["integer_matmuls"] == 8, kernels


def test_fp32_bundle_records_its_fusions(dynamic_export):
    decisions = _decisions(dynamic_export, "fp32")
    assert decisions["fusion"]["applied"]["Attention"] == 2
    assert decisions["kernels"]["by_op"].get("Attention") == 2
    # the profile default: no SkipLayerNormalization, neither in the file nor made by the session
    ops = decisions["kernels"]["ops_after_session_optimisation"]
    assert "SkipLayerNormalization" not in ops and decisions["skip_layer_norm"]["fused"] is False, ops


def _fp32_with(tiny_source, tmp_path, **device):
    """The tiny source's onnxruntime FP32 artefact, built with these [device] fields changed."""
    from dataclasses import replace

    from edgesdk.backends import ConvertContext, backend
    from edgesdk.profiles import load_profile
    from edgesdk.quant import QuantSpec

    profile = load_profile("onnxruntime")
    profile = replace(profile, device=replace(profile.device, **device))
    out = tmp_path / "bundle"
    out.mkdir()
    ctx = ConvertContext(tiny_source, tiny_source.onnx_path, out, "fp32", QuantSpec.from_profile(profile), None,
                         profile, work_dir=tmp_path)
    return backend("onnxruntime").convert(ctx)


def test_skip_layer_norm_can_be_switched_on(tiny_source, tmp_path):
    artefact = _fp32_with(tiny_source, tmp_path, skip_layer_norm=True)
    assert artefact.decisions["fusion"]["applied"]["SkipLayerNormalization"] == 4
    assert "disabled_optimizers" not in artefact.settings


def test_keep_float_names_of_the_unfused_graph_reach_the_fused_node(tiny_source, tmp_path):
    """The fallback loop ranks the unfused graph: a Q projection it keeps in float keeps that layer's Attention."""
    from edgesdk.backends import ConvertContext, backend
    from edgesdk.profiles import load_profile
    from edgesdk.quant import QuantOverrides, QuantSpec

    profile = load_profile("onnxruntime")
    spec = QuantSpec.from_profile(profile, QuantOverrides(mode="dynamic"))
    out = tmp_path / "bundle"
    out.mkdir()
    ctx = ConvertContext(tiny_source, tiny_source.onnx_path, out, "int8", spec, None, profile,
                         keep_float=("/model/encoder/layer.0/attention/self/query/MatMul",), work_dir=tmp_path)
    artefact = backend("onnxruntime").convert(ctx)
    assert "Attention_0" in artefact.decisions["excluded_nodes"]
    by_op = artefact.decisions["kernels"]["by_op"]
    assert by_op.get("Attention") == 1 and by_op.get("QAttention") == 1, by_op


def test_fusion_can_be_switched_off(tiny_source, tmp_path):
    artefact = _fp32_with(tiny_source, tmp_path, fusion=False)
    assert artefact.decisions["fusion"]["applied"] == {}
    assert "Attention" not in artefact.decisions["kernels"]["by_op"]


def test_dynamic_probe_ranks_what_dynamic_quantization_hurts(tiny_source, tmp_path, tiny_model_dir):
    from edgesdk.quant.sensitivity import build_probe, rank_layers
    from edgesdk.quant import QuantOverrides, QuantSpec
    from edgesdk.profiles import load_profile

    spec = QuantSpec.from_profile(load_profile("onnxruntime"), QuantOverrides(mode="dynamic"))
    probe = tmp_path / "probe.onnx"
    assert "quantize_dynamic" in build_probe(tiny_source.onnx_path, probe, spec, None)
    rng = np.random.default_rng(1)
    feeds = [{"input_ids": rng.integers(1000, 2000, (1, 16)), "attention_mask": np.ones((1, 16), np.int64),
              "token_type_ids": np.zeros((1, 16), np.int64)} for _ in range(4)]
    feeds = [{k: v for k, v in f.items() if k in tiny_source.input_names} for f in feeds]
    ranked = rank_layers(tiny_source.onnx_path, probe, feeds)
    names = {r.node for r in ranked}
    assert "/model/encoder/layer.0/attention/self/query/MatMul" in names
    assert any(r.output_error > 0 for r in ranked)
