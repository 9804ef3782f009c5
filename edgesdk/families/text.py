"""The text family: BERT-like encoders and classifiers fed token ids (input_ids, attention_mask, token_type_ids).

What converters need from this family and nothing else knows:
- `static_module(source, seq, mul_layernorm)`: the encoder wrapped for a static [1, seq] int32 graph with a finite
  additive mask ((1 - mask) * -100, eager attention): an additive mask of ±inf / dtype-min wrecks calibration ranges.
  With a BERT classification head the pooler + classifier are rebuilt on the same wrapper; other HF models run
  through a generic wrapper with their own mask handling. `mul_layernorm` rewrites LayerNorm's variance with MUL
  (same math) because litert-quantizer has no int16 SQUARED_DIFFERENCE kernel.
- `example_feeds(seq, batch)`, `varied_feeds(seq, batch)` and `static_feeds(batch, seq)`: real-looking token rows
  (all alike, or of every length), and calibration rows padded or truncated to int32 [1, seq].
- `TFLITE_INT16_SCOPES`: for BERT-like module names, the tensor-name scopes that full-integer TFLite keeps at int16
  activations (recipe "mix_v4": LayerNorm, residual and embedding ADDs, the attention block, GELU and the FFN
  down-projection), and `tflite_scope(onnx_node)`, which maps an ONNX MatMul of layer N onto the TFLite
  FULLY_CONNECTED of the same layer and module (FC outputs are named '<module path>/fc' at conversion).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np

NAME = "text"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LENGTH_INPUT = "attention_mask"  # a row's tokens: a static-shape runtime runs a row in the length that holds them
MASK_VALUE = -100.0  # finite: softmax weight e^-100 ≈ 0, and the mask ADD's range stays ≈ [-110, 10]
EXAMPLE_IDS = (101, 7592, 2088, 102)  # [CLS] hello world [SEP] in the BERT uncased vocabulary

# litert-quantizer op scope = output tensor names joined by ';' plus a trailing ';'.
_LN = r"(LayerNorm_LayerNorm;\d*;$|serving_default_output_0_output)"
_RES = r"Output_output;;"  # residual ADDs (…SelfOutput_output;; and …Output_output;;)
_EMB = r"Embeddings_embeddings;\d*;$"  # the embedding-sum ADDs
_ATT = r"SelfAttention_self;"  # QK BATCH_MATMUL, scale MUL, mask ADD, SOFTMAX, PV BATCH_MATMUL
_GELU = r"GELUActivation"
FFN_DOWN = r"(?<!Self)Output_output/[^;/]*Linear_dense"  # FFN down-projection: output outliers up to ~200
TFLITE_INT16_SCOPES = ((_LN, "*"), (_RES, "*"), (_EMB, "*"), (FFN_DOWN, "FULLY_CONNECTED"), (_ATT, "*"),
                       (_GELU, "*"))
DESCRIPTION = {"mask": f"(1 - mask) * {MASK_VALUE}",
               "int16_ops": "LayerNorm, residual/embedding ADDs, attention block, GELU, FFN down-projection"}


def _torch_classes():
    import torch
    from torch import nn

    class EncoderWrapper(nn.Module):
        """Token ids (int32) → last_hidden_state (or, with a BERT classification head, logits), with a finite
        additive mask, for BERT-like encoders."""

        def __init__(self, model, seq: int, head=None):
            super().__init__()
            self.embeddings = model.embeddings
            self.layers = model.encoder.layer
            self.pooler = model.pooler if head is not None else None
            self.classifier = head.classifier if head is not None else None
            self.register_buffer("position_ids", torch.arange(seq)[None, :], persistent=False)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            types = None if token_type_ids is None else token_type_ids.long()
            h = self.embeddings(input_ids=input_ids.long(), token_type_ids=types, position_ids=self.position_ids)
            m = attention_mask.to(torch.float32)[:, None, None, :]
            ext = (1.0 - m) * MASK_VALUE
            for layer in self.layers:
                h = layer(h, ext)
                h = h[0] if isinstance(h, tuple) else h
            if self.classifier is not None:  # BertForSequenceClassification: pooler, (eval-mode dropout), classifier
                return self.classifier(self.pooler(h))
            return h

    class GenericWrapper(nn.Module):
        """Any HF model: named int inputs → last_hidden_state or logits (the model's own mask handling)."""

        def __init__(self, model, output: str):
            super().__init__()
            self.model, self.output = model, output

        def forward(self, **feeds):
            out = self.model(**{k: v.long() for k, v in feeds.items()})
            return out.logits if self.output == "logits" else out.last_hidden_state

    class MulLayerNorm(nn.Module):
        """nn.LayerNorm with the variance as MUL (AEQ has no int16 SQUARED_DIFFERENCE); same math."""

        def __init__(self, ln):
            super().__init__()
            self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

        def forward(self, x):
            d = x - x.mean(-1, keepdim=True)
            var = (d * d).mean(-1, keepdim=True)
            return d * torch.rsqrt(var + self.eps) * self.weight + self.bias

    return EncoderWrapper, GenericWrapper, MulLayerNorm


def static_module(source, seq: int, mul_layernorm: bool):
    """The module a static-shape converter takes; never mutates `source.torch_module` (the PyTorch reference)."""
    from torch import nn

    model, output = source.torch_module, source.output_name
    EncoderWrapper, GenericWrapper, MulLayerNorm = _torch_classes()
    if mul_layernorm:
        model = copy.deepcopy(model)

        def swap(module):
            for name, child in module.named_children():
                if isinstance(child, nn.LayerNorm):
                    setattr(module, name, MulLayerNorm(child))
                else:
                    swap(child)

        swap(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model) if output == "logits" else model
    bert_like = hasattr(base, "embeddings") and hasattr(base, "encoder") and hasattr(base.encoder, "layer")
    if output == "logits":  # only the BERT head shape (pooler + linear classifier) is rebuilt; others run generic
        bert_like = bert_like and getattr(base, "pooler", None) is not None and hasattr(model, "classifier")
        if bert_like:
            return EncoderWrapper(base, seq, head=model).eval()
    return (EncoderWrapper(model, seq) if bert_like else GenericWrapper(model, output)).eval()


def example_feeds(input_names: list[str], seq: int, batch: int = 1) -> dict[str, Any]:
    """int32 [batch, seq] per input, every row '[CLS] hello world [SEP]' then padding (torch tensors)."""
    import torch

    ids = torch.zeros(batch, seq, dtype=torch.int32)
    ids[:, :4] = torch.tensor(EXAMPLE_IDS, dtype=torch.int32)[: min(4, seq)]
    mask = (ids != 0).to(torch.int32)
    return {name: {"input_ids": ids, "attention_mask": mask}.get(name, torch.zeros(batch, seq, dtype=torch.int32))
            for name in input_names}


def varied_feeds(input_names: list[str], seq: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """int32 [batch, seq] rows of different lengths (1 to seq tokens, '[CLS] ... [SEP]', ids from the common
    part of the BERT vocabulary), to compare signatures of one length with each other row by row."""
    rng = np.random.default_rng(seed)
    ids, mask = np.zeros((batch, seq), np.int32), np.zeros((batch, seq), np.int32)
    for r, n in enumerate(np.linspace(1, seq, batch).round().astype(int)):
        ids[r, :n] = rng.integers(1000, 8000, n)
        ids[r, 0], ids[r, n - 1] = EXAMPLE_IDS[0], EXAMPLE_IDS[-1]
        mask[r, :n] = 1
    return {name: {"input_ids": ids, "attention_mask": mask}.get(name, np.zeros((batch, seq), np.int32))
            for name in input_names}


def static_feeds(batches, input_names: list[str], seq: int, limit: int, fitting: bool = False
                 ) -> list[dict[str, np.ndarray]]:
    """Calibration batches (int64 [B, L]) as rows padded / truncated to int32 [1, seq], from at most `limit` batches;
    `fitting`: only rows whose tokens fit in `seq` (the rows a runner sends to that static length)."""
    feeds = []
    for batch in list(batches)[:limit]:
        rows = len(next(iter(batch.values())))
        mask = np.asarray(batch["attention_mask"]) if "attention_mask" in batch else None
        for r in range(rows):
            if fitting and mask is not None and int(mask[r].sum()) > seq:
                continue
            feed = {}
            for name in input_names:
                row = np.asarray(batch[name][r])[:seq]
                padded = np.zeros((1, seq), dtype=np.int32)
                padded[0, : len(row)] = row
                feed[name] = padded
            feeds.append(feed)
    return feeds


def tflite_scope(onnx_name: str) -> tuple[str, str] | None:
    """(TFLite op, regex over its output names) for an ONNX MatMul / Gemm the fallback loop holds back:
    '/model/encoder/layer.3/intermediate/dense/MatMul' → that layer's intermediate.dense FULLY_CONNECTED;
    '/model/bert/pooler/dense/Gemm', '/model/classifier/Gemm' → the head's FULLY_CONNECTED (module path + '/fc');
    '/model/encoder/layer.0/attention/self/MatMul_1' → that layer's attention BATCH_MATMULs."""
    attention = re.search(r"layer\.(\d+)/attention/self/MatMul", onnx_name)
    if attention:
        return "BATCH_MATMUL", rf"Layer_{attention.group(1)}/[^;]*SelfAttention_self"
    found = re.search(r"layer\.(\d+)/(.+)/[^/]*(MatMul|Gemm)[^/]*$", onnx_name)
    if found:
        path = "/".join(rf"[^;/]*_{re.escape(m)}" for m in found.group(2).split("/"))
        return "FULLY_CONNECTED", rf"Layer_{found.group(1)}/{path}/fc;$"
    head = re.search(r"^/(?:model/)?(.+)/[^/]*(MatMul|Gemm)[^/]*$", onnx_name)
    if head:
        modules = head.group(1).split("/")
        # EncoderWrapper holds the base model's pooler at its top level: a classifier's ONNX path names the base
        # model's attribute ('/model/bert/pooler/dense/Gemm'), the TFLite path does not ('…BertPooler_pooler/…')
        if "pooler" in modules:
            modules = modules[modules.index("pooler"):]
        path = "/".join(rf"[^;/]*_{re.escape(m)}" for m in modules)
        return "FULLY_CONNECTED", rf"(^|/){path}/fc;$"
    return None


def read_prompts(folder) -> tuple[dict, str | None, str | None]:
    """(prompts, default_prompt_name, similarity_fn_name) from config_sentence_transformers.json, if any."""
    import json

    path = folder / "config_sentence_transformers.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    prompts = {str(k): str(v) for k, v in (data.get("prompts") or {}).items() if isinstance(v, str)}
    similarity = data.get("similarity_fn_name")
    return (prompts, data.get("default_prompt_name") if data.get("default_prompt_name") in prompts else None,
            similarity if similarity in ("cosine", "dot", "euclidean", "manhattan") else None)


def read_sentence_transformers_config(folder) -> tuple[str, bool, int | None]:
    """(pooling, normalize, max_seq_length) from sentence-transformers files; ('mean', False, None) if absent."""
    import json

    from ..errors import ModelSourceError

    pooling, normalize, max_len = "mean", False, None
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            kind = module.get("type", "")
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                cfg = json.loads((folder / module["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_mean_tokens"):
                    pooling = "mean"
                else:
                    raise ModelSourceError(f"{folder}: pooling {cfg} is not supported; edgesdk supports mean and cls.")
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
    return pooling, normalize, max_len


# -- what the pipeline feeds a text model ---------------------------------------------------------------------
NNCF_MODEL_TYPE = "TRANSFORMER"
GOLDEN_TEXTS = ("A man is playing a guitar on the street.", "The quarterly report is due on Friday.",
                "¿Dónde está la estación de tren?", "ok")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def tokenizer_settings(source) -> dict[str, Any]:
    """The manifest's tokenizer section for a source: max length, pad token and id from its tokenizer files."""
    import json

    settings = {"path": "tokenizer/tokenizer.json", "max_length": source.max_length, "static_length": None,
                "pad_id": 0, "pad_token": "[PAD]"}
    config = source.tokenizer_dir / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text()).get("pad_token")
        if isinstance(pad, str):
            settings["pad_token"] = pad
    tok = json.loads((source.tokenizer_dir / "tokenizer.json").read_text())
    vocab = (tok.get("model") or {}).get("vocab")
    if isinstance(vocab, dict) and settings["pad_token"] in vocab:
        settings["pad_id"] = int(vocab[settings["pad_token"]])
    return settings


def export_inputs(source, data):
    """Held-out and calibration texts (the packaged sets unless the user gives files), tokenized like the device."""
    import shutil

    from ..quant.data import load_texts, packaged_texts, take
    from ..runtime import manifest as mf
    from ..runtime.text import TextEncoder
    from . import FamilyInputs

    settings = tokenizer_settings(source)
    specs = [mf.TensorSpec(n, "int64", ("batch", "sequence")) for n in source.input_names]
    encoder = TextEncoder(str(source.tokenizer_dir / "tokenizer.json"), mf.TokenizerInfo(**settings), specs)
    texts = load_texts(data.fidelity_data) if data.fidelity_data else packaged_texts("heldout")

    def calibration_items(samples: int) -> tuple[list, str]:
        calib = load_texts(data.calibration) if data.calibration else packaged_texts("calibration")
        return take(calib, samples), calib.source

    def payload(staging) -> None:
        tok = staging / "tokenizer"
        tok.mkdir()
        for name in TOKENIZER_FILES:
            if (source.tokenizer_dir / name).is_file():
                shutil.copyfile(source.tokenizer_dir / name, tok / name)

    return FamilyInputs(encode=encoder, heldout=list(texts.texts[: data.fidelity_samples]),
                        heldout_source=texts.source, golden=list(GOLDEN_TEXTS), calibration_items=calibration_items,
                        sections={"tokenizer": settings}, payload=payload)
