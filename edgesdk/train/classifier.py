"""Sequence classifiers for edge export: FP32 fine-tuning of a classification head, and QAT with NNCF.

Both write a plain Hugging Face folder (config with id2label, weights, tokenizer) plus `edgesdk_training.json`
(what was trained, on what, how long, with which settings), so the export pipeline treats the result like any
other model folder. A folder whose record matches the requested run is reused instead of retrained.

QAT (why NNCF): the targets' PTQ already goes through NNCF, so QAT with `nncf.quantize` on the PyTorch model reads
the same QuantSpec → NNCF mapping (preset from the activation scheme, per-channel symmetric int8 weights, ignored
scope from float_ops) and inserts the same kind of fake quantizers PTQ would place, with trainable ranges. torchao's
PT2E QAT would need a second, per-backend quantizer config; ModelOpt pins an older onnx than this stack.
After training the weights are baked onto their learned int8 grid (`nncf.strip`, which clamps and rounds them) and
saved as a float model: each target's own quantizer (NNCF for ONNX/OpenVINO/TensorRT, litert-quantizer for
LiteRT) then re-derives exactly that weight grid (symmetric per-channel min-max of on-grid weights) and calibrates
the activations. The learned activation ranges are not carried into the artefacts: no converter here takes NNCF's
fake-quantize ranges into a LiteRT full-integer model, and the record says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path


from ..errors import InputError, ModelSourceError, require
from ..evaluate import LabelledSet, label_names
from ..frontends.hf import TRAINING_RECORD as RECORD
from ..quant.spec import QuantSpec
from . import checkpoint
from .loop import TrainConfig, resolve_device, subset, train

log = logging.getLogger("edgesdk")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
QAT_CALIBRATION_SAMPLES = 128


def data_digest(data: LabelledSet) -> str:
    h = hashlib.sha256()
    for text, label in zip(data.texts, data.labels):
        h.update(text.encode() + b"\t" + label.encode() + b"\n")
    return h.hexdigest()[:16]


def read_record(folder: Path) -> dict | None:
    path = Path(folder) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def is_classifier(folder: Path) -> bool:
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise ModelSourceError(f"'{folder}' has no config.json: it is not a Hugging Face model folder.")
    return any(a.endswith("ForSequenceClassification") for a in json.loads(config.read_text()).get("architectures")
               or [])


def model_labels(folder: Path) -> list[str]:
    config = json.loads((Path(folder) / "config.json").read_text())
    return [str(v) for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())]


def text_encoder(folder: Path, max_length: int):
    from ..families.text import TOKEN_INPUTS
    from ..runtime.manifest import TensorSpec, TokenizerInfo
    from ..runtime.text import TextEncoder

    config = json.loads((Path(folder) / "config.json").read_text())
    names = [n for n in TOKEN_INPUTS if n != "token_type_ids" or config.get("type_vocab_size", 0) > 0]
    settings = TokenizerInfo("tokenizer.json", max_length, pad_id=config.get("pad_token_id") or 0)
    return TextEncoder(str(Path(folder) / "tokenizer.json"), settings,
                       [TensorSpec(n, "int64", ("batch", "sequence")) for n in names])


def predict_labels(model, folder: Path, texts, device: str = "cpu", batch_size: int = 64) -> list[str]:
    """Label names a PyTorch classifier predicts for texts (tokenized as its bundles are, up to 512 tokens)."""
    import torch

    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    encode, predicted = text_encoder(Path(folder), 512), []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            feeds = {k: torch.from_numpy(v).to(device) for k, v in encode(list(texts[i:i + batch_size])).items()}
            predicted += [names[j] for j in model(**feeds).logits.argmax(1).tolist()]
    return predicted


def _reusable(out_dir: Path, fingerprint: str) -> bool:
    record = read_record(out_dir)
    if record and record.get("fingerprint") == fingerprint and (out_dir / "config.json").is_file():
        log.info("reusing %s: trained earlier with the same data and settings (%s)", out_dir, fingerprint)
        return True
    return False


def _save(model, tokenizer_dir: Path, out_dir: Path, record: dict) -> Path:
    """save_pretrained + tokenizer + record into a staging folder, then swapped in: never half-written."""
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copyfile(Path(tokenizer_dir) / name, staging / name)
    (staging / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def fine_tune(base_dir: Path, data: LabelledSet, out_dir: Path, config: TrainConfig,
              progress: bool = True) -> Path:
    """FP32 fine-tune of `base_dir` (an encoder, or a classifier with the same labels) on `data`."""
    config.check()
    torch = require("torch", "export")
    transformers = require("transformers", "export")
    labels = label_names(data.labels)
    fingerprint = config.fingerprint("fp32", str(base_dir), data_digest(data))
    if _reusable(out_dir, fingerprint):
        return out_dir
    if is_classifier(base_dir) and model_labels(base_dir) != labels:
        raise InputError(f"'{base_dir}' is a classifier with labels {model_labels(base_dir)}, but the training data "
                         f"has labels {labels}. Start from the encoder instead, or relabel the data.")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, attn_implementation="eager", dtype=torch.float32)
    rows = subset(data, config.limit, config.seed)
    run = train(model, rows, {n: i for i, n in enumerate(labels)}, text_encoder(base_dir, config.max_length),
                config, checkpoint.checkpoint_path(out_dir), f"fine-tune FP32 ({len(rows.texts)} rows)",
                progress)
    record = {"kind": "fp32", "fingerprint": fingerprint, "base": str(base_dir), "labels": labels,
              "data": {"rows": len(data.texts), "digest": data_digest(data)}, "training": run}
    _save(model.to("cpu"), base_dir, out_dir, record)
    checkpoint.remove(checkpoint.checkpoint_path(out_dir))
    return out_dir


def quantization_aware_train(fp32_dir: Path, spec: QuantSpec, target_names: list[str], data: LabelledSet,
                             out_dir: Path, config: TrainConfig, progress: bool = True) -> Path:
    """NNCF QAT of a classifier folder under `spec`; saves the float model with weights baked on their int8 grid."""
    config.check()
    # The first QAT on a machine builds NNCF's C++ fake-quantize extension: ~40 s on an idle 2-core box, minutes on
    # a busy one. NNCF gives up after 60 s by default; wait 5 minutes instead of failing a training run (a stale
    # lock left by a killed build still fails, after those 5 minutes, with NNCF's message naming the folder to delete).
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "300")
    torch = require("torch", "export")
    transformers = require("transformers", "export")
    nncf = require("nncf", "export")
    from ..quant.nncf_options import nncf_quantize_kwargs

    if not is_classifier(fp32_dir):
        raise InputError(f"QAT starts from a classifier; '{fp32_dir}' has no sequence-classification head. "
                         "Pass --train-data so edgesdk fine-tunes one first.")
    labels = model_labels(fp32_dir)
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise InputError(f"the QAT data has labels {unknown[:5]} that the classifier '{fp32_dir}' does not know "
                         f"(it knows {labels}).")
    qat_spec = replace(spec, smooth_quant=False)  # SmoothQuant's activation rescaling would not survive baking
    fingerprint = config.fingerprint("qat", str(fp32_dir), (read_record(fp32_dir) or {}).get("fingerprint", ""),
                                     json.dumps(qat_spec.to_dict(), sort_keys=True), data_digest(data))
    if _reusable(out_dir, fingerprint):
        return out_dir
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(fp32_dir), attn_implementation="eager").eval()
    encode = text_encoder(fp32_dir, config.max_length)
    rows = subset(data, config.limit, config.seed)
    device = resolve_device(config.device)
    model.to(device)
    calibration = [{k: torch.from_numpy(v).to(device) for k, v in encode([t]).items()}
                   for t in subset(data, QAT_CALIBRATION_SAMPLES, config.seed + 1).texts]
    kwargs = nncf_quantize_kwargs(nncf, qat_spec, (), len(calibration))
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), **kwargs)
    log.info("nncf: fake quantizers inserted (preset %s) in %.0fs", kwargs["preset"].name, time.perf_counter() - started)
    run = train(quantized, rows, {n: i for i, n in enumerate(labels)}, encode, config,
                checkpoint.checkpoint_path(out_dir), f"QAT INT8 ({len(rows.texts)} rows)", progress)
    baked, on_grid = _bake(nncf, torch, transformers, quantized, fp32_dir, calibration[0])
    record = {"kind": "qat", "fingerprint": fingerprint, "base": str(fp32_dir), "labels": labels,
              "data": {"rows": len(data.texts), "digest": data_digest(data)}, "training": run,
              "qat": {"tool": f"nncf {nncf.__version__}", "call": "nncf.quantize(torch model) + fine-tuning",
                      "spec": qat_spec.to_dict(), "spec_from_targets": target_names,
                      "preset": kwargs["preset"].name, "calibration_samples": len(calibration),
                      "weights": f"{on_grid} weight tensors baked onto their learned int8 grid (nncf.strip)",
                      "activations": "learned ranges used in training only; each target's quantizer recalibrates "
                                     "them on the training texts"}}
    _save(baked, fp32_dir, out_dir, record)
    checkpoint.remove(checkpoint.checkpoint_path(out_dir))
    return out_dir


def _bake(nncf, torch, transformers, quantized, fp32_dir: Path, example: dict):
    """The trained float weights, clamped and rounded by their quantizers, in a clean (hook-free) model."""
    stripped = nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
    state = {k: v.cpu() for k, v in stripped.state_dict().items() if not k.startswith("__nncf_hooks")}
    clean = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(fp32_dir), attn_implementation="eager").eval()
    missing, unexpected = clean.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("position_ids")]:
        raise ModelSourceError(f"QAT weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    from nncf.torch.function_hook.wrapper import get_hook_storage

    weights = [n for n, q in get_hook_storage(quantized).named_hooks() if getattr(q, "narrow_range", False)]
    return clean, len(weights)


__all__ = ["TrainConfig", "fine_tune", "quantization_aware_train", "is_classifier", "model_labels", "read_record"]
