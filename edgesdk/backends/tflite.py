"""TFLite / LiteRT backend (Android: NNAPI, GPU, XNNPACK): a torch module → .tflite with litert-torch, one static
[1, L] int32 signature per sequence bucket L (the profile's shapes.buckets) and a static [B, L] signature per
batched shape (shapes.batch_shapes), all in one model sharing every weight buffer;
precisions materialised with litert-quantizer (AEQ: ai-edge-quantizer's successor under its new name; 0.11.0 gives
the same models as ai-edge-quantizer 0.10.0: the dynamic MiniLM bundle is byte-size-identical and its STS-B cosines
match to 5 digits).

Why one model with several signatures and not one model per bucket: the signatures share every weight buffer
(measured on the 2-layer test BERT: 3 signatures 8.29 MB vs 8.15 MB for one), each stays static as NNAPI/NPU
delegates need, and AEQ calibrates and quantizes each signature's subgraph with its own activation ranges.
Batched signatures exist for throughput on CPU: a short row at batch 1 pays the per-call cost of ~390 ops (MiniLM
dynamic INT8 on STS-B: 5.5 ms per row in [16, 12] vs 6.2 in [1, 12]; fp32 gains more); every batched signature is
checked against batch 1 of its length at export.

Why litert-torch and not ONNX → onnx2tf: it lives in the same venv as torch/OpenVINO/NNCF (onnx2tf pins
TensorFlow 2.19 and numpy 1.26) and its graphs can be calibrated with token-id inputs (docs/android.md).
The module to convert, its example feeds, its calibration rows and its int16 scopes come from the source's model
family (`SourceModel.family`, e.g. edgesdk/families/text.py); this module knows TFLite and AEQ only.

- fp32: the family's static module as converted.
- fp16: weights cast to fp16 (AEQ float casting) for the GPU delegate; compute stays float.
- int8 dynamic: AEQ `dynamic_wi8_afp32` (int8 per-channel weights, float activations; XNNPACK on CPU).
- int8 static: full integer with AEQ min-max calibration: int8 asymmetric activations / int8 symmetric per-channel
  weights, with int16 activations (16x8) on the family's sensitive scopes.
- `float_ops` of the QuantSpec: TFLite op names (SOFTMAX), ONNX op types mapped to them (Softmax, MatMul, Gemm,
  ...), or tensor-name regexes; those ops are left unquantized (float) by the recipe.
The FP32 conversions and the calibration result are cached for the export (its work folder and `ctx.cache`), so
the fallback loop's rebuilds neither reconvert nor recalibrate. The fallback loop's ONNX MatMul names are mapped
onto the TFLite FULLY_CONNECTED ops of the same layer and module and moved to int16 activations (dynamic: float).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgeSDKError, QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from ..runtime.tflite import signature_name
from . import Artefact, Backend, ConvertContext
from .tflite_ops import check_ops, list_ops, unsupported_op_name

log = logging.getLogger("edgesdk")
LITERT_REQUIREMENT = "ai-edge-litert==2.3.0"
SIGNATURE = "seq_{}"  # the batch-1 signature of sequence bucket L (batched ones: signature_name(batch, L))
# a batched signature vs batch 1 of its length, row by row: float compute is the same math on the same weights
# (MiniLM: bit-identical), so a conversion that broadcasts the mask or positions wrongly over the batch stops the
# export
BATCH_CHECK_COSINE = 0.9999
# Why full-integer builds carry no batched signatures: the quantizer calibrates each signature's activation
# scales on its own, and a trained 4-class classifier's batched signatures then disagreed with batch 1 on the
# same rows (cosine 0.48-0.96 at [16, 16], [16, 12], [8, 32], [8, 24]), which took the export's top-1
# agreement from 0.964 to 0.775. NNAPI/NPU delegates, the full-integer build's devices, run batch 1.
FULL_INTEGER_BATCHES = ("full-integer signatures calibrate their activation scales one signature at a time, so a "
                        "batched one does not compute what batch 1 does; NNAPI/NPU delegates run batch 1")
FIXED_SIGNATURE = "main"  # image and tensor models: their one static signature
DELEGATES = ("nnapi", "gpu", "xnnpack", "hexagon")
_QUALIFIER = re.compile(rb"(?<![^/;:])(?:[A-Za-z_<][\w<>]*\.)+(?=[A-Za-z_])")  # 'pkg.mod.<locals>.' of a component
# ONNX op types a user may name in float_ops, and the TFLite ops they become
ONNX_TO_TFLITE = {"Softmax": ("SOFTMAX",), "MatMul": ("FULLY_CONNECTED", "BATCH_MATMUL"), "Gemm": ("FULLY_CONNECTED",),
                  "Add": ("ADD",), "Sub": ("SUB",), "Mul": ("MUL",), "Div": ("DIV",), "Gelu": ("GELU",),
                  "Tanh": ("TANH",), "Conv": ("CONV_2D", "DEPTHWISE_CONV_2D"), "Gather": ("EMBEDDING_LOOKUP", "GATHER"),
                  "Sigmoid": ("LOGISTIC",), "Relu": ("RELU",), "Concat": ("CONCATENATION",)}


@dataclass(frozen=True)
class TFLiteDevice:
    """[device] of a tflite profile."""

    device: str = "phone"
    delegates: tuple[str, ...] = field(default=("xnnpack",), metadata=check(choices=DELEGATES, nonempty=True))


def convert_module(signatures: list[tuple[str, object, dict]], target: Path) -> None:
    """litert-torch conversion of (signature name, module, example feeds) into one model; an op it cannot lower
    becomes an EdgeSDKError naming the op."""
    torch = require("torch", "export")
    litert_torch = require("litert_torch", "android")
    try:
        with torch.no_grad():
            converter = litert_torch
            for name, module, feeds in signatures:
                converter = converter.signature(name, module, sample_kwargs=feeds)
            edge = converter.convert()
    except Exception as exc:  # litert-torch raises RuntimeError / MLIR errors with the op in the text
        op = unsupported_op_name(str(exc))
        if op is None:
            raise EdgeSDKError(f"litert-torch could not convert the model to TFLite: {str(exc)[:400]}") from exc
        raise EdgeSDKError(f"TFLite conversion failed: litert-torch has no lowering for op '{op}'. Replace that op "
                           "in the model (or export another target, e.g. --target onnxruntime).") from exc
    edge.export(str(target))


def _cache(ctx: ConvertContext, seq: str) -> Path:
    """Per-export cache (the export's work folder is deleted at its end), keyed by model and buckets."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{ctx.source.name}-seq{seq}")
    folder = (ctx.work_dir or ctx.onnx_path.parent) / "tflite-cache" / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fp32_tflite(ctx: ConvertContext, shapes: tuple[tuple[int, int], ...], mul_layernorm: bool
                ) -> tuple[Path, float]:
    if ctx.source.torch_module is None:
        raise EdgeSDKError(f"the tflite backend converts from the PyTorch module; '{ctx.source.source}' is an ONNX "
                           "file. Pass the Hugging Face model folder instead (--model DIR).")
    key = "-".join(f"{b}x{n}" if b > 1 else str(n) for b, n in shapes)
    path = _cache(ctx, key) / ("fp32_mulln.tflite" if mul_layernorm else "fp32.tflite")
    if path.is_file():
        return path, 0.0
    started = time.perf_counter()
    family = ctx.source.family
    modules, names = {}, ctx.source.input_names
    for _, seq in shapes:  # one module per length: its batched signatures trace the same module
        modules.setdefault(seq, family.static_module(ctx.source, seq, mul_layernorm))
    signatures = [(signature_name(b, seq), modules[seq], family.example_feeds(names, seq, batch=b))
                  for b, seq in shapes]
    partial = path.with_suffix(".partial")
    convert_module(signatures, partial)
    name_fully_connected_outputs(partial)
    unique_tensor_names(partial)
    partial.rename(path)
    seconds = time.perf_counter() - started
    log.info("litert-torch: FP32 TFLite, signatures %s%s in %.1fs", " ".join(f"[{b}, {n}]" for b, n in shapes),
             " (MUL LayerNorm)" if mul_layernorm else "", seconds)
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
    write_model(model, path)
    return renamed


# -- quantization ---------------------------------------------------------------------------------------------
def _aeq():
    require("litert_quantizer", "android")
    from litert_quantizer import qtyping, quantizer, recipe
    from litert_quantizer.algorithm_manager import AlgorithmName

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
    return {"tool": "litert-quantizer", "recipe": "float_casting fp16 weights", "compute": "float"}


def unique_tensor_names(path: Path) -> int:
    """Give every tensor of the model a unique name (AEQ refuses a model with a name twice, across subgraphs too).

    litert-torch can emit the same fused-location name for two tensors (MiniLM: 6 names twice each in the attention
    projections), and every signature's subgraph repeats the names of the others. Repeats get a prefix ('d1:' for
    the second within a subgraph, 's2:' for subgraph 2): AEQ scopes and the fallback mapping match names with
    unanchored or end-anchored regexes ('.../fc;$'), which a prefix leaves intact.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    renamed = 0
    taken: set[bytes] = set()
    for index, graph in enumerate(model.subgraphs):
        seen: dict[bytes, int] = {}
        for tensor in graph.tensors:
            name = tensor.name if isinstance(tensor.name, bytes) else str(tensor.name).encode()
            count = seen.get(name, 0)
            seen[name] = count + 1
            unique = (f"d{count}:".encode() if count else b"") + name
            if unique in taken:
                unique = f"s{index}:".encode() + unique
            if unique != name:
                tensor.name = unique
                renamed += 1
            taken.add(unique)
    if renamed:
        write_model(model, path)
        log.info("tflite: %d duplicate tensor name(s) made unique", renamed)
    return renamed


def compact_model(path: Path) -> dict:
    """Write the model again with every repeated vector and string stored once, and tensor names only where they
    are read; returns bytes before and after, and the signature whose subgraph keeps its names.

    Each signature's subgraph has its own tensor table, and each weight tensor there carries its own copy of the
    quantization parameters: per-channel int8 weights hold a float scale and an int64 zero point per output channel
    (MiniLM: 51 258 channels, 30 522 of them the word-embedding rows), 0.6 MB per subgraph, 2.5 MB of the 26 MB
    dynamic bundle with four signatures; write_model stores equal vectors once. Tensor names are the other
    per-subgraph cost. The first subgraph (the interpreter's primary one, which the op listing, recipes' scopes and
    debugging tools read) keeps them, each component with its class and attribute
    ('…/BertLayer_3/BertAttention_attention/…') but without its Python package path ('transformers.models.bert.
    modeling_bert.' in every component: 129 kB a subgraph in MiniLM). The other subgraphs run the same ops on the
    same weights at other shapes, and litert-torch numbers their names apart (';2', 'constant58'), so no name would
    be stored once for all (42 kB a subgraph even shortened, 0.4 MB of the ten-signature dynamic MiniLM): their
    names are blanked. The interpreter needs none (signature inputs and outputs are keyed by the signature's own
    names); weights and numerics are unchanged.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    before = path.stat().st_size
    model = flatbuffer_utils.read_model(str(path))
    for index, graph in enumerate(model.subgraphs):
        if index:
            for tensor in graph.tensors:
                tensor.name = b""
            continue
        names = [t.name if isinstance(t.name, bytes) else str(t.name).encode() for t in graph.tensors]
        short = [_QUALIFIER.sub(b"", n) for n in names]
        if len(set(short)) == len(short):  # shortening merged no two names
            for tensor, name in zip(graph.tensors, short):
                tensor.name = name
    kept = next((sig.signatureKey for sig in model.signatureDefs if sig.subgraphIndex == 0), b"")
    write_model(model, path)
    return {"before": before, "after": path.stat().st_size,
            "names_kept": kept.decode() if isinstance(kept, bytes) else str(kept)}


def write_model(model, path: Path) -> None:
    """A flatbuffer_utils ModelT to `path`: vectors of equal content and equal strings written once (a flatbuffer may
    point many tables at one), weight buffers inline and 16-byte aligned, written from numpy in one copy each.

    flatbuffer_utils.write_model writes a buffer read from a file with out-of-line data (litert-quantizer's output)
    byte by byte: 23 million Python calls, ~4 minutes for MiniLM here, against seconds for this.
    """
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size: int):
            super().__init__(size)
            self._vectors: dict[tuple, int] = {}
            self._strings: dict[bytes, int] = {}

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            key = (x.dtype.str, x.shape, x.tobytes())
            if key not in self._vectors:
                self.StartVector(x.itemsize, x.size, 16 if x.dtype == np.uint8 else x.dtype.alignment)
                payload = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
                self.head -= len(payload)
                self.Bytes[self.head:self.head + len(payload)] = payload
                self._vectors[key] = self.EndVector()
            return self._vectors[key]

        def CreateString(self, s, encoding="utf-8", errors="strict"):  # noqa: N802
            key = s if isinstance(s, bytes) else s.encode(encoding, errors)
            if key not in self._strings:
                self._strings[key] = super().CreateString(s, encoding, errors)
            return self._strings[key]

    size = 1 << 20
    for buffer in model.buffers:
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
        size += 0 if buffer.data is None else buffer.data.size + 16
    builder = SharingBuilder(size)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def float_op_rules(float_ops: tuple[str, ...]) -> list[tuple[str, str]]:
    """QuantSpec float_ops as AEQ (regex, TFLite op) rules: op types by name, anything else a tensor-name regex."""
    rules = []
    for op in float_ops:
        if op in ONNX_TO_TFLITE:
            rules += [(".*", name) for name in ONNX_TO_TFLITE[op]]
        elif re.fullmatch(r"[A-Z][A-Z0-9_]*", op):
            rules.append((".*", op))
        else:
            rules.append((op, "*"))
    return rules


def _apply_float_ops(q, float_ops: tuple[str, ...]) -> None:
    qtyping, _, _, Algo = _aeq()
    for regex, op in float_op_rules(float_ops):
        try:
            name = qtyping.TFLOperationName(op)
        except ValueError:
            known = ", ".join(sorted(o.value for o in qtyping.TFLOperationName if o.value != "*"))
            raise QuantizationError(f"--float-ops names '{op}', which is no TFLite op litert-quantizer knows; use "
                                    f"an ONNX op type ({', '.join(ONNX_TO_TFLITE)}), a TFLite op ({known}) or a "
                                    "tensor-name regex.") from None
        q.update_quantization_recipe(regex=regex, operation_name=name, algorithm_key=Algo.NO_QUANTIZE)


def dynamic_int8(fp32: Path, target: Path, escalate: list[dict], float_ops: tuple[str, ...]) -> dict:
    """AEQ dynamic_wi8_afp32, with one int8 scale for each embedding table instead of one per row: a per-row
    scale costs a float and an int64 zero point per vocabulary entry (MiniLM: 366 kB), and per tensor kept
    held-out cosine vs FP32 at 0.99775 mean / 0.98537 min against 0.99796 / 0.98799 per row (300 texts, seq 32).
    `--float-ops Gather` keeps the tables float if a model's fidelity needs it."""
    qtyping, quantizer, recipe, Algo = _aeq()
    q = quantizer.Quantizer(str(fp32), recipe.dynamic_wi8_afp32())
    q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP, num_bits=8,
                         granularity=qtyping.QuantGranularity.TENSORWISE)
    for item in escalate:  # dynamic mode: "higher precision" = float weights for that op
        if item["action"] == "float":
            q.update_quantization_recipe(regex=item["regex"], operation_name=qtyping.TFLOperationName(item["op"]),
                                         algorithm_key=Algo.NO_QUANTIZE)
    _apply_float_ops(q, float_ops)
    q.quantize().export_model(str(target), overwrite=True)
    return {"tool": "litert-quantizer", "recipe": "dynamic_wi8_afp32", "embedding_lookup": "int8 table, one scale",
            "kept_float": [i["onnx"] for i in escalate if i["action"] == "float"], "float_ops": list(float_ops)}


def _full_int_quantizer(fp32: Path, scopes, escalate: list[dict], float_ops: tuple[str, ...]):
    qtyping, quantizer, _, Algo = _aeq()
    Op, minmax = qtyping.TFLOperationName, Algo.MIN_MAX_UNIFORM_QUANT
    q = quantizer.Quantizer(str(fp32))
    q.update_quantization_recipe(regex=".*", operation_name=Op.ALL_SUPPORTED, op_config=_op_config(8),
                                 algorithm_key=minmax)
    q.add_dynamic_config(regex=".*", operation_name=Op.EMBEDDING_LOOKUP, num_bits=8)  # int8 table, float rows
    for regex, op in scopes:
        q.update_quantization_recipe(regex=regex, operation_name=Op.ALL_SUPPORTED if op == "*" else Op(op),
                                     op_config=_op_config(16), algorithm_key=minmax)
    for item in escalate:  # int16 activations (16x8), or float for an op the recipe already runs at int16
        if item["action"] == "int16":
            q.update_quantization_recipe(regex=item["regex"], operation_name=Op(item["op"]),
                                         op_config=_op_config(16), algorithm_key=minmax)
        else:
            q.update_quantization_recipe(regex=item["regex"], operation_name=Op(item["op"]),
                                         algorithm_key=Algo.NO_QUANTIZE)
    _apply_float_ops(q, float_ops)
    return q


def full_integer(ctx: ConvertContext, fp32: Path, target: Path, shapes: tuple[tuple[int, int], ...],
                 escalate: list[dict]) -> dict:
    family = ctx.source.family
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise QuantizationError("full-integer TFLite needs calibration data; none was built.")
    q = _full_int_quantizer(fp32, family.TFLITE_INT16_SCOPES, escalate, ctx.spec.float_ops)
    # each signature is calibrated on the rows it would run: those that fit its length (all rows for the longest);
    # a batched signature on the same rows stacked `batch` at a time (the last group topped up from the first rows)
    names, feeds, longest = ctx.source.input_names, {}, max(n for _, n in shapes)
    for batch, seq in shapes:
        fitting = family.static_feeds(ctx.calibration, names, seq, ctx.spec.samples, fitting=seq != longest)
        fitting = fitting or family.static_feeds(ctx.calibration, names, seq, ctx.spec.samples)
        feeds[signature_name(batch, seq)] = fitting if batch == 1 else _stacked(fitting, batch)
    rows = [f for part in feeds.values() for f in part]
    digest = hashlib.sha256(b"".join(f[n].tobytes() for f in rows for n in sorted(f))).hexdigest()[:16]
    key = ("tflite-calibration", str(fp32), len(rows), digest)
    started = time.perf_counter()
    if key in ctx.cache:  # the fallback loop's rebuilds: same model, same rows (kept in memory, never pickled)
        result, how = ctx.cache[key], "reused (cached in this export)"
    else:
        result = ctx.cache[key] = q.calibrate(feeds, num_threads=1)
        how = f"calibrated in {time.perf_counter() - started:.1f}s"
    log.info("litert-quantizer full-integer: %d calibration rows over %d signatures %s", len(rows), len(feeds), how)
    q.quantize(result).export_model(str(target), overwrite=True)
    return {"tool": "litert-quantizer", "recipe": "full-integer int8 + int16 (16x8) on the family's sensitive ops",
            "activations": f"int8 asymmetric per-tensor; int16 symmetric on: {family.DESCRIPTION['int16_ops']}",
            "weights": "int8 symmetric per-channel", "embedding_lookup": "int8 table, float rows (hybrid)",
            "layernorm": "rewritten with MUL (same math; AEQ has no int16 SQUARED_DIFFERENCE)",
            "calibration": {"samples": sum(len(next(iter(f.values()))) for f in rows), "method": "minmax",
                            "status": how,
                            "rows_per_signature": {sig: len(part) for sig, part in feeds.items()}},
            "int16_fully_connected": [i["onnx"] for i in escalate if i["action"] == "int16"],
            "held_back_to_float": [i["onnx"] for i in escalate if i["action"] == "float"],
            "float_ops": list(ctx.spec.float_ops)}


def _stacked(rows: list[dict[str, np.ndarray]], batch: int) -> list[dict[str, np.ndarray]]:
    """[1, L] feeds as [batch, L] feeds: consecutive rows stacked, the last group topped up from the first rows."""
    return [{n: np.concatenate([rows[(g + i) % len(rows)][n] for i in range(batch)]) for n in rows[0]}
            for g in range(0, len(rows), batch)]


# -- fallback mapping: ONNX MatMul names → TFLite FULLY_CONNECTED scopes ---------------------------------------
def map_keep_float(family, names: tuple[str, ...], scopes: dict[str, list[str]], static: bool
                   ) -> tuple[list, list]:
    """(mapped, skipped): each ONNX node the fallback loop holds back, with the TFLite op kind, regex and scopes it
    matches. Full-integer: FULLY_CONNECTED ops go to int16 activations (16x8), then float if already int16;
    attention BATCH_MATMULs (int16 in the recipe) go to float. Dynamic: any matched op is left float."""
    mapped, skipped = [], []
    int16_fc = family.FFN_DOWN if static else None
    for name in names:
        found = family.tflite_scope(name)
        op, regex = found if found else (None, None)
        hits = [s for s in scopes.get(op, []) if regex and re.search(regex, s + ";")]
        if not hits:
            why = "no module path the model family maps" if found is None else f"no {op} op with that module path"
            log.info("fallback: ONNX node %s has no TFLite counterpart (%s); skipped", name, why)
            skipped.append({"onnx": name, "why": why})
            continue
        if not static:
            action = "float" if op == "FULLY_CONNECTED" else "already float (dynamic mode quantizes weights only)"
        elif op == "FULLY_CONNECTED" and not (int16_fc and all(re.search(int16_fc, h) for h in hits)):
            action = "int16"
        else:
            action = "float"
        mapped.append({"onnx": name, "op": op, "regex": regex, "tflite": hits, "action": action})
    return mapped, skipped


# -- the backend entry point ----------------------------------------------------------------------------------
def static_shapes(profile, max_length: int) -> tuple[tuple[int, int], ...]:
    """The (batch, length) signatures to build: the profile's static shapes with lengths up to the model's
    (none fitting: batch 1 at the model's length)."""
    shapes = tuple(s for s in profile.shapes.static_shapes() if s[1] <= max_length)
    dropped = [list(s) for s in profile.shapes.static_shapes() if s[1] > max_length]
    if dropped:
        log.info("tflite: shapes %s are longer than the model's %d tokens; not built", dropped, max_length)
    return shapes or ((1, max_length),)


def convert(ctx: ConvertContext) -> Artefact:
    if ctx.source.family.NAME != "text":
        return convert_fixed(ctx)
    shapes = static_shapes(ctx.profile, ctx.source.max_length)
    static = ctx.precision == "int8" and ctx.spec.mode == "static"
    unbatched = [[b, n] for b, n in shapes if b > 1] if static else []
    if static:  # full integer: batch 1 at every length (see FULL_INTEGER_BATCHES)
        shapes = tuple(s for s in shapes if s[0] == 1)
    buckets = tuple(sorted({n for _, n in shapes}))
    batches = [[b, n] for b, n in shapes if b > 1]
    family = ctx.source.family
    fp32, seconds = fp32_tflite(ctx, shapes, mul_layernorm=static)
    target = ctx.out_dir / "model.tflite"
    decisions: dict = {"converter": "litert-torch", "signatures": {signature_name(b, n): [b, n] for b, n in shapes},
                       "family": family.NAME,
                       **{k: v for k, v in family.DESCRIPTION.items() if k != "int16_ops"},
                       "fp32_conversion_seconds": round(seconds, 1)}
    if unbatched:
        decisions["batched_signatures"] = {"not_built": unbatched, "why": FULL_INTEGER_BATCHES}
    escalate, skipped = [], []
    if ctx.keep_float:
        scopes: dict[str, list[str]] = {}
        for op in list_ops(fp32):
            scopes.setdefault(op.name, []).append(op.scope)
        escalate, skipped = map_keep_float(family, ctx.keep_float, scopes, static)
        decisions["fallback_mapping"] = {"mapped": [{k: v for k, v in i.items() if k != "regex"} for i in escalate],
                                         "skipped": skipped}
    decisions.update(materialise(ctx, fp32, target, escalate,
                                 lambda: full_integer(ctx, fp32, target, shapes, escalate)))
    decisions["compacted_bytes"] = compact_model(target)
    if batches:
        decisions["batched_vs_batch_1"] = check_batched(target, family, ctx.source.input_names, shapes,
                                                        BATCH_CHECK_COSINE)
    delegates = list(ctx.profile.device.delegates)
    op_check = check_ops(list_ops(target), delegates)
    # Signatures are [B, L]; the session pads a batch to the smallest length that fits, runs its rows in the
    # batched signatures of that length (and batch 1), so the Runner validates [batch, sequence] feeds.
    inputs = [{"name": n, "dtype": "int32", "shape": ["batch", "sequence"]} for n in ctx.source.input_names]
    out_shape = _output_shape(target, buckets[0])
    per_token = len(out_shape) == 3 and out_shape[1] == buckets[0]
    outputs = [{"name": ctx.source.output_name, "dtype": "float32",
                "shape": ["batch", *(["sequence"] if per_token else []), *out_shape[2 if per_token else 1:]]}]
    return Artefact(format="tflite", entry="model.tflite", files=["model.tflite"], inputs=inputs, outputs=outputs,
                    settings={"delegates": _preference(delegates, ctx.precision, static), "buckets": list(buckets),
                              "batches": batches, "per_token_output": per_token, "op_check": op_check,
                              "length_input": _length_input(family, ctx.source.input_names)},
                    decisions=decisions, runtime_requirements=[LITERT_REQUIREMENT],
                    tokenizer={"static_length": None, "max_length": buckets[-1]})


def materialise(ctx: ConvertContext, fp32: Path, target: Path, escalate: list[dict], full_int) -> dict:
    """The FP32 TFLite at the asked precision: copied, fp16 weights, dynamic int8, or `full_int()` (static); any
    litert-quantizer failure becomes a QuantizationError naming the precision. Returns the decisions."""
    try:
        if ctx.precision == "fp32":
            shutil.copyfile(fp32, target)
            return {}
        if ctx.precision == "fp16":
            return fp16_weights(fp32, target)
        if ctx.precision == "int8" and ctx.spec.mode == "dynamic":
            return dynamic_int8(fp32, target, escalate, ctx.spec.float_ops)
        if ctx.precision == "int8" and ctx.spec.mode == "static":
            return full_int()
        raise QuantizationError(f"the tflite backend builds fp32, fp16, int8 (--quant-mode static or dynamic); "
                                f"got {ctx.precision} with mode {ctx.spec.mode}.")
    except EdgeSDKError:
        raise
    except Exception as exc:  # litert-quantizer raises ValueError / RuntimeError with the cause in the text
        raise QuantizationError(f"litert-quantizer failed building the {ctx.precision} "
                                f"{ctx.spec.mode if ctx.precision == 'int8' else ''} TFLite model: "
                                f"{type(exc).__name__}: {str(exc)[:400]}") from exc


def convert_fixed(ctx: ConvertContext) -> Artefact:
    """Image and tensor models: one static signature at batch 1 (their inputs have no sequence axis; the session
    runs a batch row by row). Full integer is plain int8 (a CNN has none of BERT's int16-sensitive ops); the
    fallback loop's layer names are not mapped onto TFLite ops for these families yet."""
    torch = require("torch", "export")
    if ctx.source.torch_module is None:
        raise EdgeSDKError(f"the tflite backend converts from the PyTorch module; '{ctx.source.source}' is an ONNX "
                           "file, and no converter in this environment turns ONNX into TFLite (onnx2tf needs its own "
                           "TensorFlow). Export the model from its torch source (--model file.py:factory).")
    specs = ctx.source.inputs
    fp32 = _cache(ctx, "fixed") / "fp32.tflite"
    started, seconds = time.perf_counter(), 0.0
    if not fp32.is_file():
        from ..frontends.torch_module import example_input

        feeds = {s["name"]: example_input(torch, s) for s in specs}
        partial = fp32.with_suffix(".partial")
        convert_module([(FIXED_SIGNATURE, _by_name(ctx.source.torch_module, list(feeds)), feeds)], partial)
        unique_tensor_names(partial)
        partial.rename(fp32)
        seconds = time.perf_counter() - started
        log.info("litert-torch: FP32 TFLite, signature %s %s in %.1fs", FIXED_SIGNATURE,
                 [s["shape"] for s in specs], seconds)
    static = ctx.precision == "int8" and ctx.spec.mode == "static"
    target = ctx.out_dir / "model.tflite"
    decisions: dict = {"converter": "litert-torch", "signatures": {FIXED_SIGNATURE: [s["shape"] for s in specs]},
                       "family": ctx.source.family.NAME, "fp32_conversion_seconds": round(seconds, 1)}
    if ctx.keep_float:
        decisions["fallback_mapping"] = {"mapped": [], "skipped": [{"onnx": n, "why": "not mapped for "
                                                                     f"{ctx.source.family.NAME} models"}
                                                                    for n in ctx.keep_float]}
    decisions.update(materialise(ctx, fp32, target, [], lambda: _full_integer_fixed(ctx, fp32, target)))
    delegates = list(ctx.profile.device.delegates)
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(target)).get_signature_runner(FIXED_SIGNATURE).get_output_details()
    out_shape = [int(d) for d in next(iter(details.values()))["shape"]]
    inputs = [{"name": s["name"], "dtype": s["dtype"], "shape": ["batch", *s["shape"][1:]]} for s in specs]
    outputs = [{"name": ctx.source.output_name, "dtype": "float32", "shape": ["batch", *out_shape[1:]]}]
    return Artefact(format="tflite", entry="model.tflite", files=["model.tflite"], inputs=inputs, outputs=outputs,
                    settings={"delegates": _preference(delegates, ctx.precision, static), "buckets": [],
                              "signature": FIXED_SIGNATURE, "per_token_output": False,
                              "op_check": check_ops(list_ops(target), delegates)},
                    decisions=decisions, runtime_requirements=[LITERT_REQUIREMENT])


def _full_integer_fixed(ctx: ConvertContext, fp32: Path, target: Path) -> dict:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise QuantizationError("full-integer TFLite needs calibration data; none was built.")
    q = _full_int_quantizer(fp32, (), [], ctx.spec.float_ops)
    rows = [{k: np.ascontiguousarray(v[:1]) for k, v in batch.items()} for batch in ctx.calibration]
    key = ("tflite-calibration", str(fp32), len(rows))
    started = time.perf_counter()
    if key in ctx.cache:
        result, how = ctx.cache[key], "reused (cached in this export)"
    else:
        result = ctx.cache[key] = q.calibrate({FIXED_SIGNATURE: rows}, num_threads=1)
        how = f"calibrated in {time.perf_counter() - started:.1f}s"
    q.quantize(result).export_model(str(target), overwrite=True)
    return {"tool": "litert-quantizer", "recipe": "full-integer int8", "activations": "int8 asymmetric per-tensor",
            "weights": "int8 symmetric per-channel",
            "calibration": {"samples": len(rows), "method": "minmax", "status": how},
            "float_ops": list(ctx.spec.float_ops)}


def _by_name(module, names: list[str]):
    """The module with keyword inputs named like the manifest's (litert-torch names signature inputs after them)."""
    from torch import nn

    class ByName(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module

        def forward(self, **feeds):
            out = self.model(*[feeds[n] for n in names])
            return out[0] if isinstance(out, (tuple, list)) else out

    return ByName().eval()


def check_batched(path: Path, family, input_names: list[str], shapes: tuple[tuple[int, int], ...],
                  bar: float) -> dict:
    """Every batched signature against batch 1 of its length, row by row, on rows of every length (the family's
    varied_feeds): the same weights and math, so the outputs must agree (cosine >= `bar` per row).

    Export's fidelity and golden I/O are measured per length through the session, which runs rows in the batched
    signatures only when a batch fills them; this check covers every batched signature on every build, and a
    conversion that broadcasts the mask or the positions wrongly over the batch stops the export here.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    found = {}
    for batch, seq in (s for s in shapes if s[0] > 1):
        feeds = family.varied_feeds(input_names, seq, batch)
        single, batched = (interpreter.get_signature_runner(signature_name(b, seq)) for b in (1, batch))
        kinds = {n: d["dtype"] for n, d in batched.get_input_details().items()}
        together = next(iter(batched(**{n: feeds[n].astype(kinds[n]) for n in kinds}).values()))
        alone = np.concatenate([next(iter(single(**{n: feeds[n][r:r + 1].astype(kinds[n]) for n in kinds}).values()))
                                for r in range(batch)])
        a, b = together.reshape(batch, -1).astype(np.float64), alone.reshape(batch, -1).astype(np.float64)
        cosine = (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        name = signature_name(batch, seq)
        found[name] = {"rows": batch, "cosine_min": round(float(cosine.min()), 6),
                       "max_abs_diff": float(np.abs(a - b).max()), "bar": bar}
        found[name]["passed"] = bool(cosine.min() >= bar)
        if cosine.min() < bar:
            raise EdgeSDKError(f"the batched TFLite signature {name} [{batch}, {seq}] disagrees with "
                               f"{SIGNATURE.format(seq)} on the same rows (cosine {cosine.min():.6f} < "
                               f"{bar}): the conversion does not batch this model correctly. Remove "
                               f"[{batch}, {seq}] from the profile's shapes.batch_shapes (batch 1 at every length "
                               "stays).")
    return found


def _length_input(family, input_names: list[str]) -> str | None:
    """The family's mask input that gives each row's length, if this model takes it (else rows run at full length)."""
    name = getattr(family, "LENGTH_INPUT", None)
    return name if name in input_names else None


def _output_shape(path: Path, seq: int) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE.format(seq)).get_output_details()
    return [int(d) for d in next(iter(details.values()))["shape"]]


def _preference(delegates: list[str], precision: str, full_integer_model: bool) -> list[str]:
    """The profile's delegate order, filtered to those that suit this artefact; XNNPACK (CPU) always last."""
    suits = {"nnapi": full_integer_model or precision == "fp32", "gpu": precision in ("fp16", "fp32"),
             "hexagon": full_integer_model, "xnnpack": True}
    chosen = [d for d in delegates if suits.get(d, False) and d != "xnnpack"]
    return chosen + ["xnnpack"]


BACKEND = Backend(
    name="tflite", convert=convert, device=TFLiteDevice, precisions=("fp32", "fp16", "int8"), extra="android",
    requires=("litert_torch", "litert_quantizer", "ai_edge_litert"),
    tools=("litert-torch", "ai-edge-litert", "litert-quantizer", "torch"), shape_policies=("static",),
    batch_shapes=True, from_torch=True,
    spec={"mode": ("static", "dynamic"), "calibration_method": ("minmax",), "weight_granularity": ("per_channel",),
          "weight_symmetric": (True,), "activation_symmetric": (False,), "smooth_quant": (False,),
          "float_ops": ("*",)},
    memory=RuntimeModel("tflite", "liveness", False, False, False, 0, False,
                        "not measured: ideal liveness and one copy of the weights (the TFLite arena planner)",
                        int4=(False, "not supported: the LiteRT NNAPI/NPU delegates run no int4 weights"),
                        full_integer_activation_bytes=1),
)
