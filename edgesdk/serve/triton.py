"""`edgesdk triton`: bundles -> a Triton Inference Server model repository that takes text.

Per bundle NAME (its folder name, or one you pass) four models:

  NAME_model/     config.pbtxt + 1/<artefact>: `onnxruntime_onnx` for ONNX bundles (TensorRT as ORT's GPU
                  accelerator for jetson bundles without an engine), `openvino` for IR, `tensorrt_plan` when the
                  bundle holds an engine built by `edgesdk build-engine`; dynamic batching + an instance group
  NAME_tokenize/  Python backend: text -> the model's integer feeds (the bundle's tokenizer.json, its max length)
  NAME_pool/      Python backend: token states -> pooled (normalised) embeddings, or logits -> class probabilities
  NAME/           an ensemble of the three: TEXT (TYPE_STRING, one per row) -> EMBEDDING [D] or SCORES [C]

The Python models are `edgesdk/serve/triton_models/*.py`, copied verbatim; they need numpy and tokenizers in
Triton's Python environment, nothing from edgesdk. Every fact about a bundle comes from `info.bundle_info()`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BundleError, InputError
from ..runtime.manifest import read_bundle
from .info import bundle_info

MODELS_DIR = Path(__file__).with_name("triton_models")
TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


@dataclass(frozen=True)
class TritonOptions:
    max_batch: int = 32
    max_queue_delay_us: int = 5000
    instances: int = 1


def write_repository(bundles: Sequence[str | Path], out: str | Path, options: TritonOptions = TritonOptions(),
                     names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Write one ensemble (+ its three models) per bundle under `out`; returns {name: [model folders]}."""
    if options.max_batch < 1 or options.instances < 1 or options.max_queue_delay_us < 0:
        raise InputError(f"max_batch and instances must be >= 1 and the queue delay >= 0, got {options}.")
    if names is not None and len(names) != len(bundles):
        raise InputError(f"{len(names)} names for {len(bundles)} bundles; give one name per bundle.")
    infos = [bundle_info(read_bundle(path)) for path in bundles]
    names = list(names) if names is not None else [model_name(info["bundle"]) for info in infos]
    if len(set(names)) != len(names):
        raise InputError(f"two bundles would get the same model name ({names}); pass distinct names.")
    repo = Path(out)
    repo.mkdir(parents=True, exist_ok=True)
    return {name: write_models(info, name, repo, options) for info, name in zip(infos, names)}


def model_name(bundle_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", bundle_name)


def write_models(info: dict[str, Any], name: str, repo: Path, options: TritonOptions) -> list[str]:
    kind, files = artefact_kind(info)
    folders = {f"{name}_model": artefact_config(info, f"{name}_model", kind, options),
               f"{name}_tokenize": tokenize_config(info, f"{name}_tokenize", options),
               f"{name}_pool": pool_config(info, f"{name}_pool", options),
               name: ensemble_config(info, name, options)}
    for folder, config in folders.items():
        target = repo / folder
        if target.exists():
            shutil.rmtree(target)
        (target / "1").mkdir(parents=True)
        (target / "config.pbtxt").write_text(config, encoding="utf-8")
    bundle = Path(info["path"])
    for source, dest in files:
        shutil.copyfile(bundle / source, repo / f"{name}_model" / "1" / dest)
    shutil.copyfile(MODELS_DIR / "tokenize.py", repo / f"{name}_tokenize" / "1" / "model.py")
    shutil.copyfile(info["tokenizer_path"], repo / f"{name}_tokenize" / "1" / "tokenizer.json")
    shutil.copyfile(MODELS_DIR / "pool.py", repo / f"{name}_pool" / "1" / "model.py")
    if info["task"] == "classification":
        (repo / f"{name}_pool" / "labels.txt").write_text("\n".join(info["labels"]) + "\n", encoding="utf-8")
    (repo / name / "1" / ".keep").write_text("ensembles have no files; Triton wants the version folder\n")
    return list(folders)


def artefact_kind(info: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """('tensorrt' | 'onnx' | 'openvino', [(file in bundle, file name in the version folder)])."""
    if info["engines"]:
        return "tensorrt", [(info["engines"][-1], "model.plan")]
    fmt = info["artefact_format"]
    if fmt in ("onnx", "onnx-tensorrt"):
        return "onnx", [(info["artefact_entry"], "model.onnx")]
    if fmt == "openvino-ir":
        xml = info["artefact_entry"]
        return "openvino", [(f, "model.xml" if f == xml else "model.bin") for f in info["artefact_files"]
                            if f.endswith((".xml", ".bin"))]
    raise BundleError(f"bundle '{info['bundle']}' has a '{fmt}' artefact; Triton repositories take ONNX, OpenVINO IR "
                      "or a built TensorRT engine. Export for onnxruntime, intel or jetson instead.")


# -- config.pbtxt text ---------------------------------------------------------------------------------------
def tensor(name: str, dtype: str, dims: Sequence[int], extra: str = "") -> str:
    return (f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ]'
            f'{" " + extra if extra else ""} }}')


def io_block(key: str, tensors: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(tensors) + "\n]\n"


def per_row_dims(shape: Sequence[Any]) -> list[int]:
    """Manifest shape without the batch axis; named (dynamic) axes become -1."""
    return [d if isinstance(d, int) else -1 for d in list(shape)[1:]]


def triton_type(dtype: str) -> str:
    if dtype not in TRITON_TYPES:
        raise BundleError(f"tensor dtype '{dtype}' has no Triton type here; known: {sorted(TRITON_TYPES)}.")
    return TRITON_TYPES[dtype]


def parameters(values: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n'
                   for k, v in values.items())


def batching(options: TritonOptions) -> str:
    preferred = sorted({b for b in (options.max_batch // 4, options.max_batch // 2, options.max_batch) if b >= 1})
    return (f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}\n")


def instances(options: TritonOptions, kind: str) -> str:
    return f"instance_group [\n  {{ count: {options.instances} kind: {kind} }}\n]\n"


def header(name: str, options: TritonOptions, engine: str) -> str:
    return f'name: "{name}"\n{engine}\nmax_batch_size: {options.max_batch}\n'


def artefact_config(info: dict[str, Any], name: str, kind: str, options: TritonOptions) -> str:
    engine = {"tensorrt": 'platform: "tensorrt_plan"', "onnx": 'platform: "onnxruntime_onnx"',
              "openvino": 'backend: "openvino"'}[kind]
    text = header(name, options, engine)
    text += io_block("input", [tensor(s["name"], triton_type(s["dtype"]), per_row_dims(s["shape"]))
                               for s in info["inputs"]])
    text += io_block("output", [tensor(s["name"], triton_type(s["dtype"]), per_row_dims(s["shape"]))
                                for s in info["outputs"]])
    text += batching(options)
    gpu = kind == "tensorrt" or info["backend"] == "tensorrt"
    text += instances(options, "KIND_GPU" if gpu else "KIND_CPU")
    if kind == "onnx" and info["backend"] == "tensorrt":  # a jetson bundle without an engine: ORT + TensorRT
        precision = "FP16" if info["precision"] == "fp16" else ("INT8" if info["precision"] == "int8" else "FP32")
        text += ("optimization { execution_accelerators {\n  gpu_execution_accelerator : [ { name : \"tensorrt\" "
                 f'parameters {{ key: "precision_mode" value: "{precision}" }} }} ]\n}}}}\n')
    if kind == "openvino":
        text += parameters({"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"})
    return text


def tokenize_config(info: dict[str, Any], name: str, options: TritonOptions) -> str:
    text = header(name, options, 'backend: "python"')
    text += io_block("input", [tensor("TEXT", "TYPE_STRING", [1])])
    text += io_block("output", [tensor(s["name"], triton_type(s["dtype"]), per_row_dims(s["shape"]))
                                for s in info["inputs"]])
    text += instances(options, "KIND_CPU")
    text += parameters({"max_length": str(info["max_length"]), "static_length": str(info["static_length"] or ""),
                        "pad_id": str(info["pad_id"]), "pad_token": info["pad_token"],
                        "inputs": json.dumps([[s["name"], s["dtype"]] for s in info["inputs"]])})
    return text


def pool_config(info: dict[str, Any], name: str, options: TritonOptions) -> str:
    states = info["outputs"][0]
    text = header(name, options, 'backend: "python"')
    inputs = [tensor(states["name"], triton_type(states["dtype"]), per_row_dims(states["shape"]))]
    if info["task"] == "classification":
        output = tensor("SCORES", "TYPE_FP32", [info["num_labels"]], 'label_filename: "labels.txt"')
        pooling, normalize = "softmax", False
    else:
        mask = next(s for s in info["inputs"] if s["name"] == "attention_mask")
        inputs.append(tensor("attention_mask", triton_type(mask["dtype"]), per_row_dims(mask["shape"])))
        output = tensor("EMBEDDING", "TYPE_FP32", [info["dimensions"]])
        pooling, normalize = info["pooling"], info["normalize"]
    text += io_block("input", inputs) + io_block("output", [output])
    text += instances(options, "KIND_CPU")
    text += parameters({"pooling": pooling, "normalize": "true" if normalize else "false",
                        "states": states["name"], "output": output.split('"')[1]})
    return text


def ensemble_config(info: dict[str, Any], name: str, options: TritonOptions) -> str:
    states = info["outputs"][0]["name"]
    classify = info["task"] == "classification"
    out_name, out_dims = ("SCORES", info["num_labels"]) if classify else ("EMBEDDING", info["dimensions"])
    feeds = [s["name"] for s in info["inputs"]]
    text = header(name, options, 'platform: "ensemble"')
    text += io_block("input", [tensor("TEXT", "TYPE_STRING", [1])])
    text += io_block("output", [tensor(out_name, "TYPE_FP32", [out_dims])])

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
        outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
        return f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}'

    pool_inputs = {states: states} if classify else {states: states, "attention_mask": "attention_mask"}
    steps = [step(f"{name}_tokenize", {"TEXT": "TEXT"}, {f: f for f in feeds}),
             step(f"{name}_model", {f: f for f in feeds}, {states: states}),
             step(f"{name}_pool", pool_inputs, {out_name: out_name})]
    return text + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
