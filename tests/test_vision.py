"""Beyond BERT: torch modules, image and tensor models, messy ONNX files — through the same export pipeline.

A small random-weight CNN (Conv + BatchNorm + ReLU/ReLU6/HardSwish blocks) from a Python factory file is exported to
onnxruntime, intel and jetson at fp32 and int8, calibrated on a folder of PNGs; its bundles are run through the
runner with file paths, PIL images and arrays. The BatchNorms must be gone from every artefact.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk.api import ExportOptions, export
from edgesdk.errors import EdgeSDKError, InputError, ModelSourceError
from edgesdk.frontends import SourceOptions
from edgesdk.runtime import load

CNN = '''
import torch
from torch import nn


def block(cin, cout, stride, act):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), act)


def build():
    torch.manual_seed(0)
    model = nn.Sequential(block(3, 8, 1, nn.ReLU()), block(8, 16, 2, nn.ReLU6()), block(16, 16, 2, nn.Hardswish()),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding has something to fold
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model[-1].weight.data.mul_(25.0)  # decisive logits: random weights otherwise leave near-ties that any rounding flips
    return model


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 16))


def broken():
    raise RuntimeError("no such model")
'''


def _images(folder: Path, count: int, size=(40, 48), seed=0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (5, 6, 3))
        pixels = np.kron(coarse, np.ones((size[0] // 5, size[1] // 6, 1))) + rng.normal(0, 12, (*size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cnn") / "cnn.py"
    path.write_text(CNN)
    return path


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    return _images(root / "calib", 48, seed=1), _images(root / "heldout", 40, seed=2)


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory, cnn_file, image_dirs):
    out = tmp_path_factory.mktemp("cnn-dist")
    calib, heldout = image_dirs
    result = export(ExportOptions(
        targets=("onnxruntime", "intel", "jetson", "android"), precisions=("fp32", "int8"), model=f"{cnn_file}:build",
        out=str(out), calibration=str(calib), fidelity_data=str(heldout), progress=False,
        source=SourceOptions(input_shapes=((None, (1, 3, 32, 32)),), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             resize_shorter=36)))
    return {(b.target, b.precision): Path(b.path) for b in result.bundles}, result


def test_cnn_exports_to_every_target_with_batchnorm_folded(cnn_export):
    import onnx

    bundles, _ = cnn_export
    assert len(bundles) == 8
    for (target, precision), path in bundles.items():
        report = json.loads((path / "report.json").read_text())
        graph = report["graph_passes"]
        assert graph["source_modules"]["BatchNorm2d"] == 3
        assert "BatchNormalization" not in graph["ops_after"]
        manifest = json.loads((path / "manifest.json").read_text())
        entry = path / manifest["artefact"]["entry"]
        if entry.suffix == ".onnx":
            ops = {n.op_type for n in onnx.load(str(entry)).graph.node}
            assert "BatchNormalization" not in ops and ("Conv" in ops or "QLinearConv" in ops), (target, ops)
        elif entry.suffix == ".tflite":  # litert-torch folds BatchNorm into the convolutions
            from edgesdk.backends.tflite_ops import list_ops

            ops = {op.name for op in list_ops(entry)}
            assert "CONV_2D" in ops and not any("BATCH_NORM" in op for op in ops), ops
        else:  # OpenVINO IR: no BatchNormInference layer
            assert not re.search(r'type="BatchNorm', entry.read_text()), target
        assert manifest["model"]["family"] == "image"
        assert manifest["preprocessing"]["resize_shorter"] == 36
        assert manifest["fidelity"]["top1_agreement"] >= 0.9, (target, precision, manifest["fidelity"])
        if precision == "int8" and manifest["quantization"]["decisions"].get("call") == "quantize":
            assert manifest["quantization"]["decisions"]["model_type"] is None  # NNCF's CNN scheme, not TRANSFORMER
        if (target, precision) == ("onnxruntime", "int8"):  # per-tensor activation scales: the convs run integer,
            kernels = manifest["quantization"]["decisions"]["kernels"]  # but the one before HardSwish (ORT splits it
            assert kernels["integer_convs"] == 2 and kernels["float_convs"] == 1, kernels  # into HardSigmoid + Mul)


def test_jetson_engine_shapes_keep_the_image_dimensions(cnn_export):
    bundles, _ = cnn_export
    script = (bundles[("jetson", "int8")] / "build_engine.sh").read_text()
    assert "input:1x3x32x32" in script and "x256" not in script


def test_image_runner_takes_paths_pil_images_and_arrays(cnn_export, image_dirs):
    from PIL import Image

    bundles, _ = cnn_export
    paths = sorted(image_dirs[1].glob("*.png"))[:3]
    with load(bundles[("onnxruntime", "int8")]) as runner:
        by_path = runner.classify([str(p) for p in paths])
        by_pil = runner.classify([Image.open(p) for p in paths])
        by_array = runner.classify(np.stack([np.asarray(Image.open(p)) for p in paths]))
        assert by_path.labels == by_pil.labels == by_array.labels
        np.testing.assert_allclose(by_path.probabilities, by_array.probabilities, atol=1e-6)
        assert by_path.probabilities.shape == (3, 5) and by_path.label_names == ["0", "1", "2", "3", "4"]
        gray = np.asarray(Image.open(paths[0]).convert("L"))
        # a grayscale image for an RGB model: replicated to three channels, as PIL's L → RGB does
        np.testing.assert_allclose(runner.preprocess(gray)["input"],
                                   runner.preprocess(np.repeat(gray[:, :, None], 3, axis=2))["input"])
        assert runner.preprocess(str(paths[0]))["input"].shape == (1, 3, 32, 32)
        with pytest.raises(InputError, match="embedding"):
            runner.embed([str(paths[0])])
        with pytest.raises(InputError, match="not text"):
            runner.tokenize(["hello"])


def test_bad_images_get_clear_errors(cnn_export, tmp_path):
    bundles, _ = cnn_export
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with load(bundles[("intel", "int8")]) as runner:
        for bad, match in ((str(corrupt), "not an image Pillow can read"), (str(text), "not an image"),
                           (str(tmp_path / "missing.jpg"), "is not a file"),
                           (np.zeros((8, 8, 3), np.float32), "uint8"), (np.zeros((8, 8, 5), np.uint8), "H×W×3"),
                           ([], "empty"), (42, "must be a path")):
            with pytest.raises(InputError, match=match):
                runner.classify(bad)
        with pytest.raises(InputError, match="float32"):
            runner.run({"input": np.zeros((1, 3, 32, 32), np.uint8)})
        with pytest.raises(InputError, match="NaN"):
            runner.run({"input": np.full((1, 3, 32, 32), np.nan, np.float32)})


def test_image_bundles_verify_and_bench_on_the_device_path(cnn_export):
    bundles, _ = cnn_export
    for key in (("onnxruntime", "int8"), ("intel", "fp32"), ("android", "int8")):
        done = subprocess.run([sys.executable, "-m", "edgesdk.cli", "verify", str(bundles[key])],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "scripts/bench_on_device.py", str(bundles[("onnxruntime", "fp32")]),
                           "--iterations", "5", "--warmup", "1"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrong_input_shape_and_bad_sources_are_refused_before_anything_is_written(cnn_file, tmp_path):
    out = tmp_path / "out"
    cases = [
        (f"{cnn_file}:build", SourceOptions(input_shapes=((None, (1, 5, 32, 32)),)), "does not run on inputs"),
        (f"{cnn_file}:build", SourceOptions(), "--input-shape"),
        (f"{cnn_file}:broken", SourceOptions(input_shapes=((None, (1, 3, 32, 32)),)), "no such model"),
        (f"{cnn_file}:nothing", SourceOptions(input_shapes=((None, (1, 3, 32, 32)),)), "no callable 'nothing'"),
        (f"{cnn_file}:build", SourceOptions(input_shapes=((None, (1, 3, 32, 32)),), mean=(0.5, 0.5)), "--mean"),
        (f"{cnn_file}:build", SourceOptions(input_shapes=((None, (1, 3, 32, 32)),), weights=str(tmp_path / "w.pt")),
         "does not exist"),
    ]
    for model, options, match in cases:
        with pytest.raises(ModelSourceError if "mean" not in match else EdgeSDKError, match=re.escape(match)):
            export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), model=model, out=str(out),
                                 progress=False, source=options))
        assert not out.exists() or not any(out.iterdir())


def test_int8_of_an_image_model_without_images_names_the_flag(cnn_file, tmp_path):
    with pytest.raises(InputError, match="--calibration DIR"):
        export(ExportOptions(targets=("onnxruntime",), precisions=("int8",), model=f"{cnn_file}:build",
                             out=str(tmp_path / "o"), progress=False,
                             source=SourceOptions(input_shapes=((None, (1, 3, 32, 32)),))))


def test_weights_load_from_safetensors_and_torch_state_dicts_but_never_pickled_objects(cnn_file, tmp_path):
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("cnn_for_weights", cnn_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = module.build()
    with torch.no_grad():
        trained[-1].weight.mul_(3.0)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "w.pt")
    torch.save(trained, tmp_path / "whole.pt")  # a pickled module: weights_only refuses it
    from edgesdk.frontends import load_source

    x = {"input": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    expected = trained.eval()(torch.from_numpy(x["input"])).detach().numpy()
    for name in ("w.safetensors", "w.pt"):
        work = tmp_path / name.replace(".", "_")
        work.mkdir()
        source = load_source(f"{cnn_file}:build", work, options=SourceOptions(
            input_shapes=((None, (1, 3, 32, 32)),), weights=str(tmp_path / name)))
        np.testing.assert_allclose(source.reference(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelSourceError, match="cannot be read safely"):
        load_source(f"{cnn_file}:build", tmp_path, options=SourceOptions(
            input_shapes=((None, (1, 3, 32, 32)),), weights=str(tmp_path / "whole.pt")))
    save_file({"bogus": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelSourceError, match="does not fit the model"):
        load_source(f"{cnn_file}:build", tmp_path, options=SourceOptions(
            input_shapes=((None, (1, 3, 32, 32)),), weights=str(tmp_path / "other.safetensors")))


def test_onnx_cnn_from_the_wild_gets_its_batchnorm_folded_by_the_graph_passes(tmp_path, image_dirs):
    """An ONNX file that still has BatchNormalization nodes (exported in training-preserving mode)."""
    import onnx
    import torch

    namespace: dict = {}
    exec(compile(CNN, "cnn", "exec"), namespace)
    model = namespace["build"]().eval()
    path = tmp_path / "wild.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["pixel_values"], output_names=["logits"], do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes={"pixel_values": {0: "n"}})
    assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["cat", "dog", "bird", "fish", "frog"]) + "\n")
    result = export(ExportOptions(targets=("onnxruntime",), precisions=("fp32", "int8"), model=str(path),
                                  out=str(tmp_path / "dist"), calibration=str(image_dirs[0]), progress=False,
                                  source=SourceOptions(labels=str(labels))))
    for summary in result.bundles:
        report = json.loads((Path(summary.path) / "report.json").read_text())
        assert report["graph_passes"]["ops_before"]["BatchNormalization"] == 3
        assert "BatchNormalization" not in report["graph_passes"]["ops_after"]
        with load(summary.path) as runner:
            assert set(runner.classify(str(next(image_dirs[1].glob("*.png")))).labels) <= {"cat", "dog", "bird",
                                                                                             "fish", "frog"}


def test_tensor_mlp_exports_with_npz_data_and_runs_raw_feeds(cnn_file, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((64, 12)).astype(np.float32))
    np.savez(tmp_path / "heldout.npz", rng.standard_normal((32, 12)).astype(np.float32))  # a lone array
    result = export(ExportOptions(targets=("onnxruntime", "intel"), precisions=("fp32", "int8"),
                                  model=f"{cnn_file}:mlp", out=str(tmp_path / "dist"),
                                  calibration=str(tmp_path / "calib.npz"), fidelity_data=str(tmp_path / "heldout.npz"),
                                  progress=False, source=SourceOptions(input_shapes=((None, (1, 12)),))))
    for summary in result.bundles:
        assert summary.fidelity["cosine_mean"] >= 0.99, summary
        with load(summary.path) as runner:
            assert runner.family == "tensor" and runner.task == "tensor"
            out = runner.run({"input": rng.standard_normal((3, 12)).astype(np.float32)})
            assert out["output"].shape == (3, 16)
            with pytest.raises(InputError, match="run\\(feeds\\)"):
                runner.embed(["x"])
    np.savez(tmp_path / "bad.npz", input=rng.standard_normal((8, 7)).astype(np.float32))
    with pytest.raises(InputError, match="has shape \\[8, 7\\]"):
        export(ExportOptions(targets=("onnxruntime",), precisions=("int8",), model=f"{cnn_file}:mlp",
                             out=str(tmp_path / "bad"), calibration=str(tmp_path / "bad.npz"), progress=False,
                             source=SourceOptions(input_shapes=((None, (1, 12)),))))


def _sentence_transformers_style_onnx(tiny_model_dir: Path, path: Path) -> None:
    """Outputs like a sentence-transformers ONNX export: input_ids and attention_mask echoed first, then token
    embeddings [B, S, H] and the pooled, normalised sentence embedding [B, H], with misleading dim_params."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()

    class ST(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).float()
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return input_ids, attention_mask, tokens, torch.nn.functional.normalize(pooled, dim=-1)

    sample = (torch.ones(2, 9, dtype=torch.int64), torch.ones(2, 9, dtype=torch.int64))
    torch.onnx.export(ST().eval(), sample, str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"],
                      output_names=["input_ids_out", "attention_mask_out", "token_embeddings", "sentence_embedding"],
                      dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                    "attention_mask": {0: "batch_size", 1: "sequence_length"},
                                    "input_ids_out": {0: "batch_size", 1: "sequence_length"},
                                    "attention_mask_out": {0: "batch_size", 1: "sequence_length"},
                                    "token_embeddings": {0: "batch_size", 1: "sequence_length"},
                                    "sentence_embedding": {0: "sequence_length", 1: "batch_size"}})  # misleading


def test_sentence_transformers_onnx_with_echoed_inputs_exports_and_keeps_its_int8_close(tiny_model_dir, tmp_path):
    path = tmp_path / "st.onnx"
    _sentence_transformers_style_onnx(tiny_model_dir, path)
    result = export(ExportOptions(targets=("intel", "onnxruntime"), precisions=("fp32", "int8"), model=str(path),
                                  tokenizer=str(tiny_model_dir), out=str(tmp_path / "dist"), progress=False))
    for summary in result.bundles:
        manifest = json.loads((Path(summary.path) / "manifest.json").read_text())
        assert [o["name"] for o in manifest["outputs"]] == ["sentence_embedding"]
        assert manifest["model"]["task"] == "embedding" and manifest["model"]["pooling"] == "none"
        assert summary.fidelity["cosine_mean"] >= 0.99, summary
        with load(summary.path) as runner:
            vectors = runner.embed(["a short text", "a much longer text with many more words in it"])
            assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    with pytest.raises(ModelSourceError, match="token_embeddings"):
        export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), model=str(path),
                             tokenizer=str(tiny_model_dir), out=str(tmp_path / "x"), progress=False,
                             source=SourceOptions(output="token_embeddings", task="classification")))
    with pytest.raises(ModelSourceError, match="echoes an input"):
        export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), model=str(path),
                             tokenizer=str(tiny_model_dir), out=str(tmp_path / "y"), progress=False,
                             source=SourceOptions(output="input_ids_out")))


def test_targets_that_do_not_convert_a_family_say_which_do(cnn_file, tmp_path):
    with pytest.raises(ModelSourceError, match="tvm.*text.*onnxruntime"):  # tvm compiles text models only
        export(ExportOptions(targets=("tvm-x86",), precisions=("fp32",), model=f"{cnn_file}:mlp",
                             out=str(tmp_path / "o"), progress=False,
                             source=SourceOptions(input_shapes=((None, (1, 12)),))))
