import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgesdk.errors import BundleError
from edgesdk.runtime import load, read_bundle
from edgesdk.runtime.manifest import FORMAT_VERSION, manifest_digest
from edgesdk.runtime.verify import verify_bundle


def test_export_writes_every_target_and_precision(tiny_export):
    got = {(b.target, b.precision) for b in tiny_export.bundles}
    assert got == {(t, p) for t in ("tiny-intel", "tiny-onnxruntime") for p in ("fp32", "int8")}
    assert tiny_export.calibration_builds == 1  # one calibration set for both targets


def test_fp32_bundles_match_the_pytorch_reference(tiny_export):
    for b in tiny_export.bundles:
        if b.precision == "fp32":
            assert b.fidelity["cosine_min"] >= 0.9999, b


def test_int8_bundles_are_smaller_and_measured(tiny_export):
    sizes = {(b.backend, b.precision): b.size_bytes for b in tiny_export.bundles}
    for backend in ("openvino", "onnxruntime"):
        assert sizes[(backend, "int8")] < 0.5 * sizes[(backend, "fp32")]
    for b in tiny_export.bundles:
        assert b.fidelity["n"] == 64
        assert b.fidelity["cosine_mean"] >= 0.98


def test_manifest_contents(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION
    assert m.model.pooling == "mean" and m.model.normalize is True
    assert {i.name for i in m.inputs} == {"input_ids", "attention_mask", "token_type_ids"}
    assert m.inputs[0].shape == ("batch", "sequence")
    assert "tokenizer/tokenizer.json" in m.files and "model.onnx" in m.files
    assert m.versions["onnxruntime"] and m.versions["nncf"]
    assert bundle.settings.providers == ("CPUExecutionProvider",)
    assert m.memory_plan is not None and set(m.memory_plan.per_precision) == {"fp32", "int8"}
    assert not list(tiny_bundle.parent.glob(".*partial*")), "staging folders must not be left behind"


def _rehash(folder, edit):
    """Edit the manifest as a forger would: change it, then recompute its unkeyed self-hash."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    data["manifest_sha256"] = manifest_digest(data)
    path.write_text(json.dumps(data))


def test_structural_forgeries_are_refused_even_when_rehashed(bundle_copy, tmp_path):
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)
    _rehash(bundle_copy, lambda d: d.update(files={}))  # drop the file table so nothing is checked
    with pytest.raises(BundleError, match="does not list it"):
        load(bundle_copy)


@pytest.mark.parametrize("field, value", [
    (("artefact", "entry"), "../../outside/evil.onnx"),
    (("tokenizer", "path"), "/etc/hostname"),
    (("artefact", "files"), ["model.onnx", "../x"]),
])
def test_manifest_paths_stay_inside_the_bundle(bundle_copy, field, value):
    def edit(d):
        d[field[0]][field[1]] = value
    _rehash(bundle_copy, edit)
    with pytest.raises(BundleError, match=f"'{field[0]}.{field[1]}"):
        load(bundle_copy)


def test_file_table_entries_outside_the_bundle_are_refused(bundle_copy):
    _rehash(bundle_copy, lambda d: d["files"].update({"../../../../etc/passwd": {"bytes": 1, "sha256": "0" * 64}}))
    with pytest.raises(BundleError, match="not a plain relative path"):
        load(bundle_copy)


def test_unlisted_files_and_symlinks_are_refused(bundle_copy):
    (bundle_copy / "evil.py").write_text("print('hi')\n")
    with pytest.raises(BundleError, match="holds 'evil.py'"):
        load(bundle_copy)
    (bundle_copy / "evil.py").unlink()
    (bundle_copy / "tokenizer" / "vocab.link").symlink_to("/etc/hostname")
    with pytest.raises(BundleError, match="symlink"):
        load(bundle_copy)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["tokenizer"].update(max_length=0), "tokenizer.max_length"),
    (lambda d: d["tokenizer"].update(max_length=-1), "tokenizer.max_length"),
    (lambda d: d["inputs"][0].update(dtype="object"), "inputs[0].dtype"),
    (lambda d: d["model"].update(task=7), "model.task"),
    (lambda d: d.pop("artefact"), "artefact"),
    (lambda d: d["target"]["settings"].update(providers="CPUExecutionProvider"), "target.settings.providers"),
    (lambda d: d.update(surprise=1), "surprise"),
])
def test_manifest_fields_are_validated_one_by_one(bundle_copy, edit, field):
    _rehash(bundle_copy, edit)
    with pytest.raises(BundleError, match=re.escape(f"'{field}'")):
        load(bundle_copy)


def test_deeply_nested_and_huge_manifests_are_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    path.write_text('{"format_version": 2, "model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="nested too deeply|not valid JSON"):
        load(bundle_copy)
    path.write_text(" " * (5 << 20))
    with pytest.raises(BundleError, match="at most"):
        load(bundle_copy)


def test_verify_passes_on_a_fresh_bundle(tiny_bundle):
    result = verify_bundle(tiny_bundle)
    assert result.passed and result.cosine_vs_export_min > 0.9999


def test_edited_manifest_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["model"]["normalize"] = False
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="modified after export"):
        load(bundle_copy)


def test_modified_model_file_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="content changed: model.onnx"):
        load(bundle_copy)


def test_truncated_model_file_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(BundleError, match="size changed: model.onnx"):
        load(bundle_copy)


def test_missing_tokenizer_is_refused(bundle_copy):
    (bundle_copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing: tokenizer/tokenizer.json"):
        load(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        load(tmp_path)
    with pytest.raises(BundleError, match="not a folder"):
        load(tmp_path / "nothing")


def test_golden_io_is_stored(tiny_bundle):
    golden = np.load(tiny_bundle / "golden" / "expected.npz")
    assert golden["artefact"].shape == golden["reference"].shape


def test_onnxruntime_int8_runs_integer_kernels(tiny_export):
    """Every weight MatMul of the INT8 QDQ graph runs an ORT integer kernel after session optimisation; only the
    attention P·V MatMuls (fed by a float Softmax) stay float, one per layer of the 2-layer BERT."""
    path = next(b.path for b in tiny_export.bundles if b.backend == "onnxruntime" and b.precision == "int8")
    bundle = read_bundle(path)
    kernels = bundle.manifest.quantization.decisions["kernels"]
    assert kernels["float_matmuls"] == 2 and kernels["integer_matmuls"] >= 12, kernels
    assert bundle.manifest.quantization.decisions["dedicated_qdq_pairs"] > 0
    assert bundle.settings.disabled_optimizers == ("CommonSubexpressionElimination", "SkipLayerNormFusion")
    ops = kernels["ops_after_session_optimisation"]  # the residual Adds stay out of ORT's slower fused op
    assert "SkipLayerNormalization" not in ops and ops["LayerNormalization"] == 5, ops


def test_onnxruntime_int8_runs_every_weight_matmul_on_exact_u8s8_kernels(tiny_export):
    """Static INT8 weights are first stored as uint8 (zero point 128: the same values), then each layer whose U8S8
    outputs match U8U8 goes back to int8, and every other one gets int8 weights with 7-bit activation codes, where
    U8S8 cannot saturate: no weight stays uint8, and the integer kernels are unchanged."""
    import onnx
    from onnx import numpy_helper

    path = Path(next(b.path for b in tiny_export.bundles if b.backend == "onnxruntime" and b.precision == "int8"))
    decisions = read_bundle(path).manifest.quantization.decisions
    assert decisions["weights"]["re_expressed"] >= 12
    probe = decisions["weights"]["signed_where_exact"]  # layers whose U8S8 outputs matched U8U8 went back to int8
    seven = decisions["weights"]["seven_bit_activations"]["layers"]
    assert probe["samples"] == 16 and sorted(seven) == sorted(probe["kept_unsigned"])
    layers = set(probe["signed"]) | set(seven)
    assert len(layers) >= 12 and decisions["kernels"]["integer_matmuls"] >= 12
    model = onnx.load(str(path / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in (n for n in model.graph.node if n.name in layers):
        a_dq, w_dq = (producer[i] for i in node.input)
        assert inits[w_dq.input[0]].data_type == onnx.TensorProto.INT8
        assert not numpy_helper.to_array(inits[w_dq.input[2]]).any()
        zero = numpy_helper.to_array(inits[a_dq.input[2]])
        if node.name in seven:  # the 7-bit grid: uint8 codes 0-127
            assert zero.dtype == np.uint8 and int(zero) <= 127


def test_onnxruntime_int8_gathers_embedding_rows_before_dequantizing(tiny_export):
    """No int8 table is dequantized whole on every run: the embedding Gathers read the quantized rows."""
    import onnx

    path = Path(next(b.path for b in tiny_export.bundles if b.backend == "onnxruntime" and b.precision == "int8"))
    assert read_bundle(path).manifest.quantization.decisions["gathered_before_dequantize"] >= 1
    model = onnx.load(str(path / "model.onnx"))
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert not [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in dequantized]


@pytest.mark.parametrize("axis, zero", [(0, True), (0, False), (1, True), (None, True)])
def test_gather_before_dequantize_keeps_the_outputs_bit_identical(tmp_path, axis, zero):
    """Per-row (with and without zero points), per-column and per-tensor tables: the same outputs, bit for bit,
    from a graph whose Gather reads the quantized table."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.backends.onnxruntime import gather_before_dequantize

    rng = np.random.default_rng(1)
    table = rng.integers(-128, 128, (50, 6)).astype(np.int8)
    count = {0: 50, 1: 6, None: 1}[axis]
    scale = rng.uniform(0.001, 0.1, count).astype(np.float32).reshape(() if axis is None else (count,))
    inits = [numpy_helper.from_array(table, "t"), numpy_helper.from_array(scale, "s")]
    inputs = ["t", "s"]
    if zero:
        inits.append(numpy_helper.from_array(rng.integers(-5, 6, scale.shape).astype(np.int8), "z"))
        inputs.append("z")
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", inputs, ["t_dq"], **attrs),
         helper.make_node("Gather", ["t_dq", "ids"], ["rows"], axis=0),
         helper.make_node("Gather", ["t_dq", "ids2"], ["rows2"], axis=0),
         helper.make_node("Add", ["rows", "rows2"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3]),
         helper.make_tensor_value_info("ids2", TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 6])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = {"ids": rng.integers(0, 50, (2, 3)), "ids2": rng.integers(0, 50, (2, 3))}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert gather_before_dequantize(path) == 1
    onnx.checker.check_model(str(path), full_check=True)
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(before, after)
    assert "DequantizeLinear" not in [n.op_type for n in onnx.load(str(path)).graph.node if n.output[0] == "t_dq"]


def _qdq_matmul(w: np.ndarray, zero_point: int):
    """x [N, 64] → QuantizeLinear/DequantizeLinear (scale 0.05, int8 zero point) → MatMul with the int8 weight `w`
    [64, 32] dequantized per column (scale 0.01): the pattern ORT fuses into one integer MatMul, named "mm"."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
         helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=1),
         helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(32, 0.01, np.float32), "ws"),
         numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
         numpy_helper.from_array(np.array(zero_point, np.int8), "xz")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("weight_range", [10, 127])
def test_weights_go_back_to_int8_only_where_u8s8_matches_u8u8(tmp_path, weight_range):
    """A MatMul gets int8 weights back exactly when the whole model, run in ORT with int8 weights, gives what it
    gives with uint8 ones. Small weights cannot saturate a pair of u8 x s8 products, so they always qualify;
    full-range weights against extreme activations saturate on x86 without int8 dot-product instructions."""
    import shutil

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from edgesdk.backends.onnxruntime import signed_where_exact, unsigned_weights
    from edgesdk.runtime.bench import cpu_features

    rng = np.random.default_rng(2)
    w = rng.integers(-weight_range, weight_range + 1, (64, 32)).astype(np.int8)
    signed_path, path = tmp_path / "s8.onnx", tmp_path / "m.onnx"
    onnx.save(_qdq_matmul(w, 0), str(signed_path))
    shutil.copyfile(signed_path, path)
    assert unsigned_weights(path) == 1
    # activations at the ends of the int8 range, signs matching the weights' so pairs of products pile up
    feeds = [{"x": (np.sign(w[:, 0]).astype(np.float32) * 6.35)[None, :].repeat(8, 0)} for _ in range(2)]

    def run(p):
        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]

    before, with_int8 = run(path), run(signed_path)
    agree = bool(np.linalg.norm(with_int8 - before) <= 1e-4 * np.linalg.norm(before))
    if weight_range == 10:
        assert agree
    elif not cpu_features()["int8_dot_product"]:
        assert not agree  # the saturating case really saturates here, so the probe has something to tell apart
    chosen = signed_where_exact(path, feeds)
    assert chosen["samples"] == 2 and chosen["signed" if agree else "kept_unsigned"] == ["mm"]
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}["w"]
    assert stored == (TensorProto.INT8 if agree else TensorProto.UINT8)
    assert np.allclose(run(path), before if not agree else with_int8)


def test_seven_bit_activations_make_u8s8_exact_on_full_range_weights(tmp_path):
    """Full-range int8 weights against activations at both ends of their range, signs matched so pairs of products
    pile up (the case that saturates U8S8 on x86 without VNNI): on the 7-bit grid ORT's integer kernel gives what
    float arithmetic on the same dequantized values gives, and ORT still runs it as an integer MatMul."""
    import onnx
    from onnx import numpy_helper

    from edgesdk.backends.onnxruntime import kernels_run, seven_bit_activations, unsigned_weights

    rng = np.random.default_rng(3)
    w = rng.choice(np.array([-127, 127], np.int8), (64, 32))
    path = tmp_path / "m.onnx"
    onnx.save(_qdq_matmul(w, -3), str(path))
    assert unsigned_weights(path) == 1
    assert seven_bit_activations(path)["layers"] == ["mm"]
    assert kernels_run(path)["integer_matmuls"] == 1
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    scale, zero = inits["xd_scale_7bit"], inits["xd_zero_point_7bit"]
    assert inits["w"].dtype == np.int8 and zero.dtype == np.uint8 and int(zero) == round(125 * 127 / 255)
    assert np.isclose(scale, 0.05 * 255 / 127)
    high, low = (-3 + 127) * 0.05, (-3 - 128) * 0.05  # the calibrated range's ends
    x = np.where(w[:, ::4].T > 0, high, low).astype(np.float32)  # 8 rows, each matching one column's signs
    codes = np.clip(np.round(x / scale) + zero, 0, 255)
    assert codes.max() <= 127 and codes.min() >= 0
    expected = ((codes - zero) * scale).astype(np.float32) @ (w.astype(np.float32) * 0.01)
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_a_failing_saturation_probe_does_not_stop_the_export(tiny_model_dir, tmp_path, monkeypatch):
    """The int8-weights probe only speeds a bundle up: when ORT cannot run it the export still succeeds and the
    manifest says why; the 7-bit step, which needs no probe, then gives every layer its int8 weights."""
    import onnx

    from edgesdk.api import ExportOptions, export
    from edgesdk.backends import onnxruntime as ort_backend

    from conftest import write_profile

    def broken(model, rows):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(ort_backend, "_integer_matmul_outputs", broken)
    profile = write_profile(tmp_path / "tiny-ort.toml", "onnxruntime", name="tiny-ort",
                            fidelity={"cosine_mean": 0.98, "cosine_min": 0.9}, quant={"samples": 32})
    result = export(ExportOptions(targets=(str(profile),), model=str(tiny_model_dir), out=str(tmp_path / "dist"),
                                  precisions=("int8",), fidelity_samples=16, progress=False))
    path = Path(result.bundles[0].path)
    weights = read_bundle(path).manifest.quantization.decisions["weights"]
    assert weights["signed_where_exact"] == {"skipped": "RuntimeError: probe failed"}
    layers = set(weights["seven_bit_activations"]["layers"])
    model = onnx.load(str(path / "model.onnx"))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    stored = [inits[producer[n.input[1]].input[0]] for n in model.graph.node if n.name in layers]
    assert len(stored) >= 12 and set(stored) == {onnx.TensorProto.INT8}


def test_unsigned_weights_keep_the_dequantized_values(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.backends.onnxruntime import unsigned_weights

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (8, 4)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["w_dq"], axis=1),
         helper.make_node("MatMul", ["x", "w_dq"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(4, 0.02, np.float32), "s")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert unsigned_weights(path) == 1
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.array_equal(before, after)
