"""TFLite / LiteRT backend (Android: NNAPI, GPU, XNNPACK): the source's torch module → .tflite with litert-torch,
fixed [1, seq] int32 token inputs; precisions materialised with ai-edge-quantizer (AEQ).

Why litert-torch and not ONNX → onnx2tf: it lives in the same venv as torch/OpenVINO/NNCF (onnx2tf pins
TensorFlow 2.19 and numpy 1.26) and its graphs can be calibrated with token-id inputs (docs/android.md).

- fp32: the HF encoder wrapped so the attention mask is finite ((1 - mask) * -100, eager attention): an
  additive mask of ±inf / dtype-min wrecks calibration ranges.
- fp16: weights cast to fp16 (AEQ float casting) for the GPU delegate; compute stays float.
- int8 dynamic: AEQ `dynamic_wi8_afp32` (int8 per-channel weights, float activations; XNNPACK on CPU).
- int8 static: full integer with AEQ, recipe "mix_v4" measured in research (scratch/tflite/RESULTS.md): int8
  asymmetric activations / int8 symmetric per-channel weights, with int16 activations (16x8) on LayerNorm,
  residual and embedding ADDs, the attention block, GELU and the FFN down-projection. LayerNorm is rewritten
  with MUL (same math) because SQUARED_DIFFERENCE has no int16 kernel in AEQ.
The FP32 conversions and the calibration result are cached in the export's work folder (beside the optimised
ONNX, deleted with it), keyed by model and seq, so the fallback loop's rebuilds neither reconvert nor
recalibrate. The fallback loop's ONNX MatMul names are mapped onto the TFLite FULLY_CONNECTED ops of the same
layer and module and moved to int16 activations (dynamic mode: to float).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import EdgeSDKError, QuantizationError, require
from . import Artefact, ConvertContext
from .tflite_ops import check_ops, list_ops, unsupported_op_name
from . import tflite_calibration as calibration_cache

log = logging.getLogger("edgesdk")
MASK_VALUE = -100.0  # finite: softmax weight e^-100 ≈ 0, and the mask ADD's range stays ≈ [-110, 10]
LITERT_REQUIREMENT = "ai-edge-litert==2.3.0"
SIGNATURE = "serving_default"

# mix_v4 (scratch/tflite/run_aeq.py): AEQ op scope = output tensor names joined by ';' plus a trailing ';'.
_LN = r"(LayerNorm_LayerNorm;\d*;$|serving_default_output_0_output)"
_RES = r"Output_output;;"  # residual ADDs (…SelfOutput_output;; and …Output_output;;)
_EMB = r"Embeddings_embeddings;\d*;$"  # the embedding-sum ADDs
_ATT = r"SelfAttention_self;"  # QK BATCH_MATMUL, scale MUL, mask ADD, SOFTMAX, PV BATCH_MATMUL
_GELU = r"GELUActivation"
_FC2 = r"(?<!Self)Output_output/[^;/]*Linear_dense"  # FFN down-projection: output outliers up to ~200
MIX_V4 = ((_LN, "*"), (_RES, "*"), (_EMB, "*"), (_FC2, "FULLY_CONNECTED"), (_ATT, "*"), (_GELU, "*"))


# -- conversion ---------------------------------------------------------------------------------------------------
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


def wrap_module(model, input_names: list[str], output: str, seq: int, mul_layernorm: bool):
    """The module litert-torch converts; never mutates `model` (the pipeline's PyTorch reference)."""
    from torch import nn

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


def sample_feeds(input_names: list[str], seq: int) -> dict:
    import torch

    ids = torch.zeros(1, seq, dtype=torch.int32)
    ids[0, :4] = torch.tensor([101, 7592, 2088, 102], dtype=torch.int32)[: min(4, seq)]
    mask = (ids != 0).to(torch.int32)
    return {name: {"input_ids": ids, "attention_mask": mask}.get(name, torch.zeros(1, seq, dtype=torch.int32))
            for name in input_names}


def convert_module(module, feeds: dict, target: Path) -> None:
    """litert-torch conversion; an op it cannot lower becomes an EdgeSDKError naming the op."""
    torch = require("torch", "export")
    litert_torch = require("litert_torch", "android")
    try:
        with torch.no_grad():
            edge = litert_torch.convert(module, sample_kwargs=feeds)
    except Exception as exc:  # litert-torch raises RuntimeError / MLIR errors with the op in the text
        op = unsupported_op_name(str(exc))
        if op is None:
            raise EdgeSDKError(f"litert-torch could not convert the model to TFLite: {str(exc)[:400]}") from exc
        raise EdgeSDKError(f"TFLite conversion failed: litert-torch has no lowering for op '{op}'. Replace that op "
                           "in the model (or export another target, e.g. --target onnxruntime).") from exc
    edge.export(str(target))


def _cache(ctx: ConvertContext, seq: int) -> Path:
    """Per-export cache (the export's work folder is deleted at its end), keyed by model and seq."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{ctx.source.name}-seq{seq}")
    folder = ctx.onnx_path.parent / "tflite-cache" / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fp32_tflite(ctx: ConvertContext, seq: int, mul_layernorm: bool) -> tuple[Path, float]:
    if ctx.source.torch_module is None:
        raise EdgeSDKError(f"the tflite backend converts from the PyTorch module; '{ctx.source.source}' is an ONNX "
                           "file. Pass the Hugging Face model folder instead (--model DIR).")
    path = _cache(ctx, seq) / ("fp32_mulln.tflite" if mul_layernorm else "fp32.tflite")
    if path.is_file():
        return path, 0.0
    started = time.perf_counter()
    module = wrap_module(ctx.source.torch_module, ctx.source.input_names, ctx.source.output_name, seq, mul_layernorm)
    partial = path.with_suffix(".partial")
    convert_module(module, sample_feeds(ctx.source.input_names, seq), partial)
    name_fully_connected_outputs(partial)
    partial.rename(path)
    seconds = time.perf_counter() - started
    log.info("litert-torch: FP32 TFLite [1, %d]%s in %.1fs", seq, " (MUL LayerNorm)" if mul_layernorm else "", seconds)
    return path, seconds


def name_fully_connected_outputs(path: Path) -> int:
    """Name each FULLY_CONNECTED output after its weight's module path + '/fc'.

    litert-torch's output names come from fused MLIR locations: the Q and K projections of a layer may both be
    called '…SelfAttention_self', so a recipe could neither target them one by one nor keep them out of the
    attention-block rule. The weight constant keeps the module path ('…BertLayer_3/…Linear_query;'), so the
    output is renamed from it; AEQ recipes and the fallback mapping then address every FC exactly.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    wanted = flatbuffer_utils.BuiltinOperator.FULLY_CONNECTED
    fc = [i for i, code in enumerate(model.operatorCodes)
          if flatbuffer_utils.get_builtin_code_from_operator_code(code) == wanted]
    renamed = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.opcodeIndex not in fc or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            weight = graph.tensors[op.inputs[1]].name
            weight = weight.decode() if isinstance(weight, bytes) else str(weight)
            # fused names list the locations merged into the constant; the Linear's own path comes last
            own = [part for part in weight.split(";") if part and not part.isdigit()][-1]
            graph.tensors[op.outputs[0]].name = f"{own}/fc".encode()
            renamed += 1
    flatbuffer_utils.write_model(model, str(path))
    return renamed


# -- quantization ---------------------------------------------------------------------------------------------
def _aeq():
    require("ai_edge_quantizer", "android")
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    return qtyping, quantizer, recipe, AlgorithmName


def _op_config(bits: int):
    qtyping, *_ = _aeq()
    act = qtyping.TensorQuantizationConfig(num_bits=bits, symmetric=bits == 16, dtype=qtyping.TensorDataType.INT,
                                           granularity=qtyping.QuantGranularity.TENSORWISE)
    weight = qtyping.TensorQuantizationConfig(num_bits=8, symmetric=True, dtype=qtyping.TensorDataType.INT,
                                              granularity=qtyping.QuantGranularity.CHANNELWISE)
    return qtyping.OpQuantizationConfig(activation_tensor_config=act, weight_tensor_config=weight,
                                        compute_precision=qtyping.ComputePrecision.INTEGER, explicit_dequantize=False)


def fp16_weights(fp32: Path, target: Path) -> dict:
    qtyping, quantizer, _, Algo = _aeq()
    q = quantizer.Quantizer(str(fp32))
    q.update_quantization_recipe(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key=Algo.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    q.quantize().export_model(str(target), overwrite=True)
    return {"tool": "ai-edge-quantizer", "recipe": "float_casting fp16 weights", "compute": "float"}


def dynamic_int8(fp32: Path, target: Path, escalate: list[dict]) -> dict:
    qtyping, quantizer, recipe, Algo = _aeq()
    q = quantizer.Quantizer(str(fp32), recipe.dynamic_wi8_afp32())
    for item in escalate:  # dynamic mode: "higher precision" = float weights for that FC
        q.update_quantization_recipe(regex=item["regex"], operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
                                     algorithm_key=Algo.NO_QUANTIZE)
    q.quantize().export_model(str(target), overwrite=True)
    return {"tool": "ai-edge-quantizer", "recipe": "dynamic_wi8_afp32",
            "kept_float_fully_connected": [i["onnx"] for i in escalate]}


def _full_int_quantizer(fp32: Path, escalate: list[dict]):
    qtyping, quantizer, _, Algo = _aeq()
    Op, minmax = qtyping.TFLOperationName, Algo.MIN_MAX_UNIFORM_QUANT
    q = quantizer.Quantizer(str(fp32))
    q.update_quantization_recipe(regex=".*", operation_name=Op.ALL_SUPPORTED, op_config=_op_config(8),
                                 algorithm_key=minmax)
    q.add_dynamic_config(regex=".*", operation_name=Op.EMBEDDING_LOOKUP, num_bits=8)  # int8 table, float rows
    for regex, op in MIX_V4:
        q.update_quantization_recipe(regex=regex, operation_name=Op.ALL_SUPPORTED if op == "*" else Op(op),
                                     op_config=_op_config(16), algorithm_key=minmax)
    for item in escalate:
        q.update_quantization_recipe(regex=item["regex"], operation_name=Op.FULLY_CONNECTED,
                                     op_config=_op_config(16), algorithm_key=minmax)
    return q


def calibration_feeds(ctx: ConvertContext, seq: int) -> list[dict[str, np.ndarray]]:
    """Calibration batches (int64 [1, L]) padded / truncated to int32 [1, seq], one row per feed."""
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise QuantizationError("full-integer TFLite needs calibration data; none was built.")
    feeds = []
    for batch in list(ctx.calibration)[: ctx.spec.samples]:
        rows = len(next(iter(batch.values())))
        for r in range(rows):
            feed = {}
            for name in ctx.source.input_names:
                row = np.asarray(batch[name][r])[:seq]
                padded = np.zeros((1, seq), dtype=np.int32)
                padded[0, : len(row)] = row
                feed[name] = padded
            feeds.append(feed)
    return feeds


def full_integer(ctx: ConvertContext, fp32: Path, target: Path, seq: int, escalate: list[dict]) -> dict:
    q = _full_int_quantizer(fp32, escalate)
    feeds = calibration_feeds(ctx, seq)
    digest = hashlib.sha256(b"".join(f[n].tobytes() for f in feeds for n in sorted(f))).hexdigest()[:16]
    cached = _cache(ctx, seq) / f"calibration-{len(feeds)}-{digest}.npz"
    started = time.perf_counter()
    result = calibration_cache.load(cached)  # arrays only, never pickle
    if result is not None:
        how = "reused (cached in this export)"
    else:
        result = q.calibrate({SIGNATURE: feeds}, num_threads=1)
        calibration_cache.save(cached, result)
        how = f"calibrated in {time.perf_counter() - started:.1f}s"
    log.info("ai-edge-quantizer full-integer: %d calibration samples %s", len(feeds), how)
    q.quantize(result).export_model(str(target), overwrite=True)
    return {"tool": "ai-edge-quantizer", "recipe": "mix_v4 full-integer (int8 + int16 16x8 on sensitive ops)",
            "activations": "int8 asymmetric per-tensor; int16 symmetric on: LayerNorm, residual/embedding ADDs, "
                           "attention block, GELU, FFN down-projection",
            "weights": "int8 symmetric per-channel", "embedding_lookup": "int8 table, float rows (hybrid)",
            "layernorm": "rewritten with MUL (same math; AEQ has no int16 SQUARED_DIFFERENCE)",
            "calibration": {"samples": len(feeds), "method": "minmax", "status": how},
            "int16_fully_connected": [i["onnx"] for i in escalate]}


# -- fallback mapping: ONNX MatMul names → TFLite FULLY_CONNECTED scopes ---------------------------------------
def onnx_to_tflite_regex(onnx_name: str) -> str | None:
    """'/model/encoder/layer.3/intermediate/dense/MatMul' → a regex matching that layer's intermediate.dense FC."""
    found = re.search(r"layer\.(\d+)/(.+)/[^/]*MatMul[^/]*$", onnx_name)
    if not found:
        return None
    modules = found.group(2).split("/")
    path = "/".join(rf"[^;/]*_{re.escape(m)}" for m in modules)
    return rf"Layer_{found.group(1)}/{path}/fc;$"  # FC outputs are named '<module path>/fc' at conversion


def map_keep_float(names: tuple[str, ...], fc_scopes: list[str], already_int16: str | None) -> tuple[list, list]:
    """(mapped, skipped): each mappable ONNX name with its regex and the FC scopes it matches."""
    mapped, skipped = [], []
    for name in names:
        regex = onnx_to_tflite_regex(name)
        hits = [s for s in fc_scopes if regex and re.search(regex, s + ";")]
        if not hits:
            why = "no layer.N/<module> path" if regex is None else "no FULLY_CONNECTED op with that layer and module"
            if re.search(r"layer\.\d+/attention/self/MatMul", name):
                why = "attention-score MatMul = a BATCH_MATMUL in TFLite (int16 in full-integer, float in dynamic)"
            log.info("fallback: ONNX node %s has no TFLite FULLY_CONNECTED counterpart (%s); skipped", name, why)
            skipped.append({"onnx": name, "why": why})
            continue
        note = "already int16 in the recipe" if already_int16 and all(re.search(already_int16, h) for h in hits) \
            else "moved to int16 activations (16x8)"
        mapped.append({"onnx": name, "regex": regex, "tflite": hits, "action": note})
    return mapped, skipped


# -- the backend entry point ----------------------------------------------------------------------------------
def convert(ctx: ConvertContext) -> Artefact:
    seq = int(ctx.profile.shapes.seq or 128)
    static = ctx.precision == "int8" and ctx.spec.mode == "static"
    fp32, seconds = fp32_tflite(ctx, seq, mul_layernorm=static)
    target = ctx.out_dir / "model.tflite"
    decisions: dict = {"converter": "litert-torch", "static_shape": [1, seq], "mask": f"(1 - mask) * {MASK_VALUE}",
                       "fp32_conversion_seconds": round(seconds, 1)}
    escalate, skipped = [], []
    if ctx.keep_float:
        fc = [op.scope for op in list_ops(fp32) if op.name == "FULLY_CONNECTED"]
        escalate, skipped = map_keep_float(ctx.keep_float, fc, _FC2 if static else None)
        decisions["fallback_mapping"] = {"mapped": [{k: v for k, v in i.items() if k != "regex"} for i in escalate],
                                         "skipped": skipped}
    if ctx.precision == "fp32":
        shutil.copyfile(fp32, target)
    elif ctx.precision == "fp16":
        decisions.update(fp16_weights(fp32, target))
    elif ctx.precision == "int8" and ctx.spec.mode == "dynamic":
        decisions.update(dynamic_int8(fp32, target, escalate))
    elif static:
        decisions.update(full_integer(ctx, fp32, target, seq, escalate))
    else:
        raise QuantizationError(f"the tflite backend builds fp32, fp16, int8 (--quant-mode static or dynamic); got "
                                f"{ctx.precision} with mode {ctx.spec.mode}.")
    delegates = list(ctx.profile.device.delegates or ["xnnpack"])
    op_check = check_ops(list_ops(target), delegates)
    # The model itself is [1, seq] (target.model_input_shape); the session runs a batch's rows one by one, so the
    # feeds the Runner validates may have any batch size: axis 0 is "batch" here (the Runner checks static dims).
    inputs = [{"name": n, "dtype": "int32", "shape": ["batch", seq]} for n in ctx.source.input_names]
    outputs = [{"name": ctx.source.output_name, "dtype": "float32", "shape": ["batch", *_output_shape(target)[1:]]}]
    return Artefact(format="tflite", entry="model.tflite", files=["model.tflite"], inputs=inputs, outputs=outputs,
                    target_fields={"delegates": _preference(delegates, ctx.precision, static),
                                   "signature": SIGNATURE, "model_input_shape": [1, seq], "op_check": op_check},
                    decisions=decisions, runtime_requirements=[LITERT_REQUIREMENT],
                    tokenizer={"static_length": seq})


def _output_shape(path: Path) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE).get_output_details()
    return [int(d) for d in next(iter(details.values()))["shape"]]


def _preference(delegates: list[str], precision: str, full_integer_model: bool) -> list[str]:
    """The profile's delegate order, filtered to those that suit this artefact; XNNPACK (CPU) always last."""
    suits = {"nnapi": full_integer_model or precision == "fp32", "gpu": precision in ("fp16", "fp32"),
             "xnnpack": True}
    chosen = [d for d in delegates if suits.get(d, False) and d != "xnnpack"]
    return chosen + ["xnnpack"]
