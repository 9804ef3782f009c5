"""Android / TFLite target: litert-torch conversion, AEQ precisions, the LiteRT session, the op check and the
fallback mapping — on the real LiteRT interpreter with the 2-layer BERT."""

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edgesdk.api import ExportOptions, export
from edgesdk.errors import BackendNotAvailableError, BundleError, EdgeSDKError
from edgesdk.quant import QuantOverrides
from edgesdk.runtime import load, read_bundle
from tests.conftest import write_profile

MATMUL = "/model/encoder/layer.{}/{}/MatMul"


def _profile(work: Path, **fidelity):
    return write_profile(work / "tiny-android.toml", "android", name="tiny-android",
                         fidelity=fidelity or {"cosine_mean": 0.98, "cosine_min": 0.9}, quant={"samples": 16},
                         shapes={"buckets": [16, 128], "batch_shapes": [[4, 16]]})


@pytest.fixture(scope="module")
def android(tmp_path_factory, tiny_model_dir):
    work = tmp_path_factory.mktemp("android")
    profile = str(_profile(work))
    common = dict(targets=(profile,), model=str(tiny_model_dir), fidelity_samples=32, progress=False)
    full = export(ExportOptions(out=str(work / "dist"), precisions=("fp32", "fp16", "int8"), **common))
    # fp32 + dynamic INT8 in one command: the path that crashed in litert-quantizer on repeated tensor names
    dyn = export(ExportOptions(out=str(work / "dyn"), precisions=("fp32", "int8"),
                               quant=QuantOverrides(mode="dynamic"), **common))
    bundles = {b.precision: Path(b.path) for b in full.bundles}
    bundles["dynamic"] = next(Path(b.path) for b in dyn.bundles if b.precision == "int8")
    return bundles


def _reference(model_dir, feeds):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()}).last_hidden_state
    mask = feeds["attention_mask"][:, :, None].astype(np.float32)
    return (hidden.numpy() * mask).sum(1) / mask.sum(1)


def test_fp32_bundle_embeds_and_matches_pytorch(android, tiny_model_dir):
    bundle = read_bundle(android["fp32"])
    manifest = bundle.manifest
    assert manifest.artefact.entry == "model.tflite" and manifest.fidelity.cosine_min >= 0.9999
    assert {i.dtype for i in manifest.inputs} == {"int32"}
    assert bundle.settings.buckets == (16, 128) and manifest.tokenizer.static_length is None
    assert bundle.settings.batches == ((4, 16),) and bundle.settings.length_input == "attention_mask"
    assert manifest.tokenizer.max_length == 128 and set(manifest.fidelity.per_length) == {"16", "128"}
    assert [(c.batch, c.length) for c in manifest.golden.per_length] == [(1, 16), (1, 128), (4, 16)]
    batched = np.load(bundle.file(manifest.golden.per_length[-1].inputs))  # the [4, 16] signature's own rows
    assert batched["input_ids"].shape == (4, 16)
    assert manifest.runtime_requirements[-1] == "ai-edge-litert==2.3.0"
    texts = ["A man is playing a guitar.", "The report is due on Friday.", "ok"]
    with load(android["fp32"], threads=1) as runner:
        got = runner.embed(texts)
        reference = _reference(tiny_model_dir, runner.tokenize(texts))
    cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert got.shape == (3, 64) and cosine.min() >= 0.9999


def test_fp16_and_dynamic_int8_are_smaller(android):
    size = {k: (b / "model.tflite").stat().st_size for k, b in android.items()}
    assert size["fp16"] < 0.6 * size["fp32"] and size["dynamic"] < 0.4 * size["fp32"]
    dyn = read_bundle(android["dynamic"])
    assert dyn.manifest.quantization.decisions["recipe"] == "dynamic_wi8_afp32"
    assert dyn.settings.op_check["verdict"].startswith("dynamic-range")
    assert read_bundle(android["fp16"]).settings.delegates[0] == "gpu"


def test_full_integer_op_check_reports_the_main_path(android):
    bundle = read_bundle(android["int8"])
    manifest = bundle.manifest
    check = bundle.settings.op_check
    assert check["verdict"].startswith("full-integer main path"), check
    assert check["float_ops"] == 0 and check["int16_ops"] > 0
    assert any(line.startswith("NNAPI") for line in check["details"])
    decisions = manifest.quantization.decisions
    assert decisions["calibration"]["rows_per_signature"]["seq_128"] == 16
    # full integer is batch 1 at every length: the profile's [4, 16] is recorded as not built, with the reason
    assert set(decisions["signatures"]) == {"seq_16", "seq_128"} and bundle.settings.batches == ()
    assert decisions["batched_signatures"]["not_built"] == [[4, 16]]
    assert "batched_vs_batch_1" not in decisions
    assert bundle.settings.delegates == ("nnapi", "xnnpack")
    # only the primary subgraph keeps its tensor names (what the op listing reads); the others' are blank
    compacted = decisions["compacted_bytes"]
    assert compacted["names_kept"] == "seq_16" and compacted["after"] < compacted["before"]


def test_buckets_pad_truncate_and_batch(android):
    with load(android["fp32"], threads=1) as runner:
        feeds = runner.tokenize(["short", "word " * 500])
        assert feeds["input_ids"].shape == (2, 128) and feeds["input_ids"].dtype == np.int32
        assert feeds["attention_mask"].sum(1).tolist() == [3, 128]
        assert feeds["input_ids"][1, -1] == 102  # truncated, [SEP] kept last
        assert runner.tokenize(["short"])["input_ids"].shape == (1, 3)  # padded to the batch, not to 128
        session = runner._session
        assert [session.bucket_for(n) for n in (3, 16, 17, 128)] == [16, 16, 128, 128]
        mixed = runner.tokenize(["short", "word " * 40, "a third"])
        assert mixed["input_ids"].shape[1] == 42 and session.row_buckets(mixed).tolist() == [16, 128, 16]
        assert session.row_buckets(runner.tokenize(["short"], pad_to=128)).tolist() == [128]  # padded on purpose
        batch = runner.embed(["short", "word " * 500, "a third"], batch_size=3)
        single = runner.embed(["word " * 500])
        short = runner.embed(["short"])  # runs in the 16-token signature
        padded = runner.run(runner.tokenize(["short"], pad_to=128))  # the same text in the 128 signature
    assert np.allclose(batch[1], single[0], atol=1e-5) and np.allclose(batch[0], short[0], atol=1e-5)
    from edgesdk.runtime.text import pool

    long_form = pool(padded["last_hidden_state"], runner.tokenize(["short"], pad_to=128)["attention_mask"], "mean",
                     True)
    assert np.allclose(long_form[0], short[0], atol=1e-4)


def test_one_interpreter_per_thread_gives_the_same_answer(android):
    with load(android["int8"], threads=1) as runner:
        expected = runner.embed(["thread safety"])
        results = [None] * 3

        def work(i):
            results[i] = runner.embed(["thread safety"])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(np.array_equal(r, expected) for r in results)


def test_corrupted_tflite_is_refused_at_load(android, tmp_path):
    bundle = tmp_path / "corrupt"
    shutil.copytree(android["fp32"], bundle)
    model = bundle / "model.tflite"
    model.write_bytes(b"\0" * 64 + model.read_bytes()[64:])
    with pytest.raises(BundleError, match="failed verification"):
        load(bundle)
    with pytest.raises(BundleError, match="LiteRT cannot load"):
        load(bundle, verify=False)


def test_unconvertible_op_is_named():
    import torch

    from edgesdk.backends.tflite import convert_module

    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    with pytest.raises(EdgeSDKError, match="no lowering for op '.*_linalg_svd"):
        convert_module([("seq_4", Svd().eval(), {"x": torch.randn(4, 4)})], Path("/nonexistent/never-written.tflite"))


def test_absent_delegate_gives_a_clear_message(android, monkeypatch, caplog):
    from edgesdk.runtime.tflite import load_delegate

    with pytest.raises(BackendNotAvailableError, match="'gpu' delegate is not available"):
        load_delegate("gpu")
    with pytest.raises(BackendNotAvailableError, match="unknown TFLite delegate 'tpu'"):
        load_delegate("tpu")
    monkeypatch.setenv("EDGESDK_TFLITE_DELEGATES", "nnapi,xnnpack")
    with caplog.at_level("INFO", logger="edgesdk"):
        runner = load(android["fp32"], threads=1)
    assert "'nnapi' delegate is not available" in caplog.text and "running on XNNPACK" in caplog.text
    assert runner.embed(["still runs"]).shape == (1, 64)


def test_onnx_matmul_names_map_onto_the_tflite_ops_of_the_same_module(android):
    from edgesdk.backends.tflite import map_keep_float
    from edgesdk.backends.tflite_ops import list_ops
    from edgesdk.families import text

    scopes = {}
    for op in list_ops(android["fp32"] / "model.tflite"):
        scopes.setdefault(op.name, []).append(op.scope)
    assert len(scopes["FULLY_CONNECTED"]) == 12
    names = (MATMUL.format(1, "intermediate/dense"), MATMUL.format(0, "attention/self/query"),
             MATMUL.format(0, "attention/self/key"), MATMUL.format(1, "output/dense"),
             MATMUL.format(1, "attention/output/dense"), "/model/encoder/layer.0/attention/self/MatMul_1",
             "/pooler/dense/MatMul")
    mapped, skipped = map_keep_float(text, names, scopes, static=True)
    assert [m["op"] for m in mapped] == ["FULLY_CONNECTED"] * 5 + ["BATCH_MATMUL"]
    assert [len(m["tflite"]) for m in mapped[:5]] == [1, 1, 1, 1, 1] and len(mapped[5]["tflite"]) == 2  # QK, PV
    assert "Layer_1/" in mapped[0]["tflite"][0] and mapped[1]["tflite"][0].endswith("Linear_query/fc")
    assert mapped[2]["tflite"][0].endswith("Linear_key/fc") and "SelfOutput" not in mapped[3]["tflite"][0]
    assert [m["action"] for m in mapped] == ["int16", "int16", "int16", "float", "int16", "float"]  # FFN-down: int16
    assert [s["onnx"] for s in skipped] == ["/pooler/dense/MatMul"]  # the embedding wrapper has no pooler
    dynamic, _ = map_keep_float(text, names, scopes, static=False)
    assert [m["action"] for m in dynamic][:5] == ["float"] * 5 and dynamic[5]["action"].startswith("already float")


def test_a_classifiers_head_gemms_map_onto_its_tflite_head():
    """A BertForSequenceClassification's ONNX names carry the base model's attribute ('/model/bert/pooler/...'),
    the static module's TFLite names do not (EncoderWrapper holds the pooler itself): the pooler's Gemm, often
    the most sensitive layer of a classifier, must still map instead of being skipped. Names as litert-torch
    writes them for the tiny 4-class BERT."""
    from edgesdk.backends.tflite import map_keep_float
    from edgesdk.families import text

    wrapper = "edgesdk.families.text._torch_classes.<locals>.EncoderWrapper/"
    layer = wrapper + "torch.nn.modules.container.ModuleList_layers/transformers.models.bert.modeling_bert.BertLayer_1/"
    scopes = {"FULLY_CONNECTED": [
        wrapper + "transformers.models.bert.modeling_bert.BertPooler_pooler/torch.nn.modules.linear.Linear_dense/fc",
        wrapper + "torch.nn.modules.linear.Linear_classifier/fc",
        layer + "transformers.models.bert.modeling_bert.BertOutput_output/torch.nn.modules.linear.Linear_dense/fc"]}
    names = ("/model/bert/pooler/dense/Gemm", "/model/classifier/Gemm", "/model/bert/encoder/layer.1/output/dense/MatMul")
    mapped, skipped = map_keep_float(text, names, scopes, static=True)
    assert skipped == []
    assert [m["tflite"] for m in mapped] == [[s] for s in scopes["FULLY_CONNECTED"]]
    assert [m["action"] for m in mapped] == ["int16", "int16", "float"]  # FFN-down is int16 already: float


def test_fallback_rebuild_reuses_calibration_and_raises_precision(tmp_path, tiny_model_dir):
    from edgesdk.backends import ConvertContext
    from edgesdk.backends.tflite import convert
    from edgesdk.backends.tflite_ops import list_ops
    from edgesdk.frontends import load_source
    from edgesdk.profiles import load_profile
    from edgesdk.quant import CalibrationSet, QuantSpec, packaged_texts
    from edgesdk.runtime.manifest import TensorSpec, TokenizerInfo
    from edgesdk.runtime.text import TextEncoder

    source = load_source(str(tiny_model_dir), tmp_path)
    profile = load_profile(str(_profile(tmp_path)))
    encoder = TextEncoder(str(tiny_model_dir / "tokenizer.json"), TokenizerInfo("tokenizer.json", 128),
                          [TensorSpec(n, "int64", ("batch", "sequence")) for n in source.input_names])
    calibration = CalibrationSet.build(packaged_texts("calibration"), encoder, 16)
    decisions, int16_fc, cache = [], [], {}
    for i, keep in enumerate(((), (MATMUL.format(1, "intermediate/dense"),))):
        out = tmp_path / f"build{i}"
        out.mkdir()
        artefact = convert(ConvertContext(source, source.onnx_path, out, "int8", QuantSpec.from_profile(profile),
                                          calibration, profile, keep, work_dir=tmp_path, cache=cache))
        decisions.append(artefact.decisions)
        int16_fc.append(sum(op.name == "FULLY_CONNECTED" and op.int16 for op in list_ops(out / "model.tflite")))
    assert decisions[0]["calibration"]["status"].startswith("calibrated")
    assert decisions[1]["calibration"]["status"].startswith("reused")
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pkl", ".pickle")]  # kept in memory, never pickled
    assert decisions[1]["int16_fully_connected"] == [MATMUL.format(1, "intermediate/dense")]
    assert int16_fc[1] == int16_fc[0] + 1


def test_a_quantizer_failure_reaches_the_user_naming_the_stage(tmp_path, tiny_model_dir, monkeypatch):
    """Whatever litert-quantizer raises inside a build becomes a QuantizationError that says which build failed."""
    from edgesdk.backends import tflite
    from edgesdk.errors import QuantizationError

    def broken(*args, **kwargs):
        raise ValueError("Tensor name x is not unique in the model.")

    monkeypatch.setattr(tflite, "dynamic_int8", broken)  # the quantizer call itself, not the runtime
    with pytest.raises(QuantizationError, match="litert-quantizer failed building the int8 dynamic TFLite model: "
                                                "ValueError: Tensor name x"):
        export(ExportOptions(targets=(str(_profile(tmp_path)),), model=str(tiny_model_dir), out=str(tmp_path / "d"),
                             precisions=("int8",), quant=QuantOverrides(mode="dynamic"), fidelity_samples=8,
                             progress=False))
    assert not list((tmp_path / "d").glob("*int8*")), "no bundle, not even a hidden staging folder, stays behind"


def test_repeated_tensor_names_are_made_unique_across_signatures(android, tmp_path):
    """litert-quantizer's input has every name once across subgraphs; the bundle's model shares them again."""
    from ai_edge_litert.tools import flatbuffer_utils

    from edgesdk.backends.tflite import compact_model, unique_tensor_names

    path = tmp_path / "model.tflite"
    shutil.copyfile(android["dynamic"] / "model.tflite", path)
    model = flatbuffer_utils.read_model(str(path))
    main = 0  # the primary subgraph keeps its names
    shared = [[t.name for t in g.tensors] for g in model.subgraphs]
    assert len(model.subgraphs) == 3  # seq_16, b4_seq_16, seq_128
    # the primary subgraph keeps its names, each once; the others' are blank (they mirror it)
    assert len(shared[main]) == len(set(shared[main])) and all(shared[main])
    assert all(set(n) == {b""} for i, n in enumerate(shared) if i != main)
    assert unique_tensor_names(path) > 0
    names = [t.name for g in flatbuffer_utils.read_model(str(path)).subgraphs for t in g.tensors]
    assert len(names) == len(set(names))
    compact_model(path)
    assert [t.name for t in flatbuffer_utils.read_model(str(path)).subgraphs[main].tensors] == shared[main]


def test_row_plan_fills_batches_and_pads_a_half_full_tail():
    from edgesdk.runtime.tflite import row_plan

    assert [row_plan(n, (1, 16)) for n in (1, 7, 8, 16, 20, 32, 40)] == [
        [1], [1] * 7, [16], [16], [16, 1, 1, 1, 1], [16, 16], [16, 16, 16]]
    assert row_plan(13, (1, 4, 16)) == [16] and row_plan(6, (1, 4, 16)) == [4, 4] and row_plan(0, (1, 4)) == []


def _record_calls(runner, shape: tuple[int, int]) -> list:
    """The input shapes each call of the runner's `shape` signature receives, from now on (this thread)."""
    session = runner._session
    session._interpreter()
    calls: list = []
    signature = session._local.runners[shape]
    session._local.runners[shape] = lambda **f: calls.append(f["input_ids"].shape) or signature(**f)
    return calls


def test_a_batch_runs_in_the_batched_signature_and_matches_rows_run_alone(android):
    texts = ["short", "a third text", "word " * 40, "four", "five words in this one", "six", "seven", "eight"]
    for kind in ("fp32", "dynamic"):  # full integer has no batched signatures
        with load(android[kind], threads=1) as runner:
            calls = _record_calls(runner, (4, 16))
            together = runner.embed(texts, batch_size=8)
            alone = np.concatenate([runner.embed([t]) for t in texts])
        assert calls == [(4, 16), (4, 16)], kind  # 7 short rows: one full batch of 4, then 3 of 4 padded
        assert np.allclose(together, alone, atol=2e-5), (kind, np.abs(together - alone).max())  # the same math


def test_golden_io_runs_every_batched_signature_and_the_bundle_checks_itself(android):
    """verify re-runs the [4, 16] golden case through the [4, 16] signature; full integer has no batched case."""
    from edgesdk.runtime.verify import verify_bundle

    for kind in ("fp32", "dynamic"):
        with load(android[kind], threads=1) as runner:
            calls = _record_calls(runner, (4, 16))
            case = runner.manifest.golden.per_length[-1]
            feeds = {k: v for k, v in np.load(runner.bundle.file(case.inputs)).items()}
            got = runner.postprocess(feeds, runner.run(feeds)[runner.outputs[0].name])
            expected = np.load(runner.bundle.file(case.expected))["artefact"]
        assert calls == [(4, 16)] and np.allclose(got, expected, atol=1e-5), kind
        assert verify_bundle(android[kind], threads=1).passed, kind
    assert all(c.batch == 1 for c in read_bundle(android["int8"]).manifest.golden.per_length)


def test_batched_signatures_share_every_weight_buffer(android):
    """A batched signature adds its tensor tables, not a copy of the weights: the buffers only its subgraph uses
    (its own small constants) are under 1 % of the model's bytes."""
    from ai_edge_litert.tools import flatbuffer_utils

    for kind in ("fp32", "dynamic"):
        model = flatbuffer_utils.read_model(str(android[kind] / "model.tflite"))
        batched = next(s.subgraphIndex for s in model.signatureDefs if s.signatureKey == b"b4_seq_16")
        users: dict[int, set] = {}
        for index, graph in enumerate(model.subgraphs):
            for tensor in graph.tensors:
                users.setdefault(tensor.buffer, set()).add(index)
        sizes = {i: len(b.data) for i, b in enumerate(model.buffers) if b.data is not None}
        own = sum(n for i, n in sizes.items() if users.get(i) == {batched})
        assert sum(sizes.values()) > 1_000_000 and own < 0.01 * sum(sizes.values()), (kind, own)


def test_the_bundle_model_stores_repeated_vectors_once(android, tmp_path):
    """compact_model: per-channel scales and zero points of every subgraph written once, buffers 16-aligned,
    the interpreter's outputs unchanged (flatbuffer_utils.write_model writes them per subgraph)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from edgesdk.backends.tflite import compact_model

    bundle = android["dynamic"] / "model.tflite"
    plain = tmp_path / "plain.tflite"
    flatbuffer_utils.write_model(flatbuffer_utils.read_model(str(bundle)), str(plain))
    assert bundle.stat().st_size < plain.stat().st_size - 20_000
    again = tmp_path / "again.tflite"
    shutil.copyfile(plain, again)
    sizes = compact_model(again)
    assert sizes["before"] == plain.stat().st_size and sizes["after"] == bundle.stat().st_size
    from ai_edge_litert import schema_py_generated as schema

    raw = again.read_bytes()
    root = schema.Model.GetRootAs(raw, 0)
    offsets = [root.Buffers(i).DataAsNumpy().ctypes.data - np.frombuffer(raw, np.uint8).ctypes.data
               for i in range(root.BuffersLength()) if root.Buffers(i).DataLength() >= 64]
    assert offsets and all(o % 16 == 0 for o in offsets)
    feeds = {"input_ids": np.array([[101, 7592, 2088, 102] + [0] * 12], np.int32),
             "attention_mask": np.array([[1] * 4 + [0] * 12], np.int32), "token_type_ids": np.zeros((1, 16), np.int32)}
    outs = [next(iter(Interpreter(model_path=str(p)).get_signature_runner("seq_16")(**feeds).values()))
            for p in (plain, again)]
    assert np.array_equal(*outs)
