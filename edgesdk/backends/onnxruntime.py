"""ONNX Runtime backend: the FP32 ONNX with ORT's transformer fusions, or an INT8 ONNX: static QDQ made by NNCF's
ONNX backend, or dynamic made by ORT's own quantizer on the fused graph.

NNCF places QuantizeLinear/DequantizeLinear pairs with its transformer rules (the pattern ORT's CPU provider
fuses into integer kernels); weights are symmetric per-channel. NNCF cannot take the fused graph (its SmoothQuant
fails on the Attention contrib op), so static INT8 stays on standard ops. The static graph is then reshaped for
ORT's integer kernels without changing NNCF's values (embedding rows gathered before dequantizing, a dedicated Q/DQ
pair per MatMul), and each weight MatMul is put on a kernel that is exact on x86 CPUs without VNNI: U8U8, U8S8 where
it did not saturate, or U8S8 with 7-bit activation codes. Dynamic quantization uses ONNX Runtime's
`quantize_dynamic` with per-channel s8 weights (per-tensor loses ~3 points of cosine on MiniLM) on the fused graph,
where each Attention becomes one QAttention (Q, K and V in one integer GEMM). The fusions (ort_fusion.py) are ORT
contrib ops: the tensorrt backend never applies them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QuantizationError, require
from ..memory.runtime_model import RuntimeModel
from ..runtime.schema import check
from . import Artefact, Backend, BackendOption, ConvertContext, onnx_io_specs

MB = 1 << 20


@dataclass(frozen=True)
class ORTDevice:
    """[device] of an onnxruntime profile."""

    device: str = "CPU"  # a label: the CPU execution provider runs the bundle
    opset: int = field(default=17, metadata=check(min=13, max=23))  # ONNX opset the frontend exports
    # static INT8: a Q/DQ pair per consumer so ORT runs integer kernels (faster; on AVX2 CPUs without VNNI their
    # u8s8 arithmetic costs ~0.002 cosine on MiniLM, measured); false keeps NNCF's shared pairs (float kernels)
    integer_kernels: bool = True
    # static INT8 weight storage for those kernels: "u8" (default) stores the symmetric int8 weights as uint8 with
    # zero point 128 (the same values), so ORT runs its U8U8 kernels; "s8" keeps int8, whose u8s8 kernels on x86
    # CPUs without VNNI add pairs of products into int16 with saturation (vpmaddubsw): MiniLM's cosine vs FP32 on
    # the 512 held-out texts 0.99436 / min 0.93985 with s8, 0.99672 / 0.95361 with u8, ~6 % slower. "s8" suits
    # VNNI/AMX x86 and ARM devices, where u8s8 does not saturate and is the faster kernel.
    weights: str = field(default="u8", metadata=check(choices=("u8", "s8")))
    # with "u8": store a layer's weights back as int8 (faster U8S8 kernels) where its MatMul gives the same
    # outputs with either on the calibration activations, i.e. where U8S8 did not saturate (MiniLM: the six
    # FFN-out MatMuls, a third of the MACs)
    signed_where_exact: bool = True
    # with "u8": the layers still on uint8 weights after that (U8S8 saturated there) get int8 weights too, with
    # their activations on a 7-bit grid (uint8 codes 0-127 over the same calibrated range), where U8S8 cannot
    # saturate: every weight MatMul then runs the faster kernel (MiniLM 8 % faster; held-out cosine mean 0.99672
    # -> 0.99623, min 0.95361 -> 0.95647). Builds of the fallback loop keep the exact U8U8 kernels instead.
    seven_bit_activations: bool = True
    # ORT's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization) for the FP32
    # and dynamic INT8 artefacts; false ships standard ops only
    fusion: bool = True
    # ORT's SkipLayerNormalization contrib op (residual Add + bias + LayerNormalization in one kernel), made by the
    # fusion pass and by the session's SkipLayerNormFusion; false keeps the standard Add + LayerNormalization ops
    # (both switched off): ORT 1.32's CPU kernel for it took 6.6 ns per element against 1.0 for
    # LayerNormalization, so MiniLM ran 5-8 % faster without it in FP32 and INT8 (same outputs)
    skip_layer_norm: bool = False


def convert(ctx: ConvertContext) -> Artefact:
    onnx = require("onnx", "export")
    ort = require("onnxruntime", "onnxruntime")
    target = ctx.out_dir / "model.onnx"
    decisions = {}
    if ctx.precision == "fp32":
        fused = _fused(ctx)
        shutil.copyfile(fused.path if fused.used else ctx.onnx_path, target)
        decisions = {"fusion": fused.record}
    elif ctx.precision == "int8":
        decisions = _quantize(ctx, target)
    else:
        raise QuantizationError(f"the onnxruntime backend builds fp32 and int8, not {ctx.precision}.")
    settings = {"providers": ["CPUExecutionProvider"]}
    disabled = [*(KEEP_DEDICATED_PAIRS if decisions.get("dedicated_qdq_pairs") else ()),
                *(() if ctx.profile.device.skip_layer_norm else NO_SKIP_LAYER_NORM)]
    if disabled:
        settings["disabled_optimizers"] = disabled
    decisions["skip_layer_norm"] = {"fused": ctx.profile.device.skip_layer_norm, "why": (
        "[device] skip_layer_norm = true" if ctx.profile.device.skip_layer_norm else
        "standard Add + LayerNormalization: ORT's SkipLayerNormalization CPU kernel is the slower one")}
    decisions["kernels"] = kernels_run(target, settings.get("disabled_optimizers", ()))
    inputs, outputs = onnx_io_specs(onnx.load(str(target), load_external_data=False))
    return Artefact(format="onnx", entry="model.onnx", files=["model.onnx"], inputs=inputs, outputs=outputs,
                    settings=settings, decisions=decisions,
                    runtime_requirements=[f"onnxruntime=={ort.__version__}"])


def _quantize(ctx: ConvertContext, target: Path) -> dict:
    spec = ctx.spec
    if spec.mode == "dynamic":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fused = _fused(ctx)
        source = fused.path if fused.used else ctx.onnx_path
        # a node the fallback loop names on the unfused graph may now live inside a fused one (Q/K/V → Attention)
        kept = [fused.absorbed.get(name, name) for name in ctx.keep_float] if fused.used else list(ctx.keep_float)
        excluded = list(dict.fromkeys([*kept, *float_op_nodes(source, spec.float_ops)]))
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # contrib ops' outputs
        return {"tool": "onnxruntime.quantization", "call": "quantize_dynamic", "per_channel": True,
                "weight_type": "QInt8", "excluded_nodes": excluded, "fusion": fused.record}
    if spec.mode == "weight-only":
        raise QuantizationError("the onnxruntime target has no weight-only INT8 mode; use --quant-mode static "
                                "or dynamic.")
    if ctx.calibration is None:
        raise QuantizationError("static INT8 needs calibration data; none was built.")
    from ..quant.nncf_options import nncf_quantize_onnx

    decisions = nncf_quantize_onnx(ctx.onnx_path, target, spec, ctx.calibration, ctx.keep_float)
    decisions["gathered_before_dequantize"] = gather_before_dequantize(target)
    if ctx.profile.device.integer_kernels:
        decisions["dedicated_qdq_pairs"] = dedicated_dequantize(target)
        if ctx.profile.device.weights == "u8":
            decisions["weights"] = {"stored": "uint8, zero point 128 (U8U8 kernels), except the layers below",
                                    "re_expressed": unsigned_weights(target),
                                    "why": "u8s8 kernels saturate on x86 without VNNI (--ort-weights s8 keeps int8)"}
            if ctx.profile.device.signed_where_exact:
                try:  # a speed step only: if ORT cannot run a probe, every weight stays uint8 (the file unchanged)
                    decisions["weights"]["signed_where_exact"] = signed_where_exact(target, ctx.calibration)
                except Exception as exc:  # noqa: BLE001 (ORT raises its own Fail/InvalidGraph types)
                    decisions["weights"]["signed_where_exact"] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            if ctx.profile.device.seven_bit_activations:
                decisions["weights"]["seven_bit_activations"] = seven_bit_activations(target) if not ctx.keep_float \
                    else {"skipped": "a fallback build (layers held back in float): the exact U8U8 kernels stay"}
    decisions["fusion"] = {"applied": {}, "why": "NNCF cannot quantize ORT's fused contrib ops (its SmoothQuant "
                                                 "fails on Attention): static INT8 stays on standard ops"}
    return decisions


@dataclass
class _FusedGraph:
    path: Path
    used: bool  # False: nothing worth shipping fused (no Attention matched), the unfused graph is used
    record: dict  # what the manifest's decisions say about it
    absorbed: dict  # unfused node name → the fused node holding it


def _fused(ctx: ConvertContext) -> _FusedGraph:
    """The source's FP32 export with ORT's fusions, made once per export (the fallback loop rebuilds often)."""
    from .ort_fusion import fuse

    skip_layer_norm = ctx.profile.device.skip_layer_norm
    key = ("ort_fusion", str(ctx.source.onnx_path), skip_layer_norm)
    if not ctx.profile.device.fusion:
        return _FusedGraph(ctx.onnx_path, False, {"applied": {}, "why": "--ort-fusion false"}, {})
    if ctx.source.family.NAME != "text":
        return _FusedGraph(ctx.onnx_path, False, {"applied": {}, "why": "transformer fusions: text models only"}, {})
    if key not in ctx.cache:
        folder = ctx.work_dir or ctx.out_dir.parent
        path = Path(folder) / "ort_fused_fp32.onnx"
        fusion = fuse(ctx.source.onnx_path, path, skip_layer_norm=skip_layer_norm)
        record = fusion.to_dict()
        used = bool(fusion.applied.get("Attention") or fusion.applied.get("MultiHeadAttention"))
        if not used:
            record["why"] = ("no Attention matched: the optimised graph is shipped (ORT's session fuses "
                             "SkipLayerNormalization and BiasGelu by itself)")
        ctx.cache[key] = _FusedGraph(path, used, record, fusion.absorbed)
    return ctx.cache[key]


def dedicated_dequantize(path: Path) -> int:
    """Give every consumer of a shared activation QuantizeLinear → DequantizeLinear pair a pair of its own; returns
    the pairs added.

    NNCF quantizes a tensor once, so the Q, K and V projections of a layer read one shared Q/DQ pair. ONNX Runtime
    fuses Q → DQ → MatMul into an integer kernel (MatMulIntegerToFloat) only where the pair serves that one MatMul:
    the shared pair left all Q/K/V MatMuls in float. Same scales, same zero points, same quantized values: only the
    graph's shape changes (what ORT's own quantizer calls DedicatedQDQPair). ORT's own common-subexpression
    elimination would merge the copies again, so the bundle's runner switches that one optimizer off
    (settings.disabled_optimizers); with both, every weight MatMul of MiniLM runs an integer kernel.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    consumers = _consumers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    made = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        users = consumers.get(dq.output[0], [])
        q = producer.get(dq.input[0])
        if len(users) < 2 or q is None or q.op_type != "QuantizeLinear" or dq.output[0] in outputs \
                or len(consumers.get(q.output[0], [])) != 1:
            continue
        for index, user in enumerate(users[1:], start=1):
            q_copy, dq_copy = onnx.NodeProto(), onnx.NodeProto()
            q_copy.CopyFrom(q)
            dq_copy.CopyFrom(dq)
            q_copy.name, dq_copy.name = f"{q.name}_dedicated_{index}", f"{dq.name}_dedicated_{index}"
            q_copy.output[0] = f"{q.output[0]}_dedicated_{index}"
            dq_copy.input[0] = q_copy.output[0]
            dq_copy.output[0] = f"{dq.output[0]}_dedicated_{index}"
            user.input[:] = [dq_copy.output[0] if i == dq.output[0] else i for i in user.input]
            at = list(graph.node).index(user)
            graph.node.insert(at, dq_copy)
            graph.node.insert(at, q_copy)
            made += 1
    if made:
        onnx.save(model, str(path))
    return made


def unsigned_weights(path: Path) -> int:
    """Store every symmetric int8 weight that feeds a DequantizeLinear as uint8 with zero point 128: the same
    dequantized values ((w + 128) - 128), so ORT picks its U8U8 integer kernels instead of U8S8. Returns how
    many weights were re-expressed. The new zero point has the shape of the old one, or of the scale (per
    channel) when there was none."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    made = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[0]])
        zero_name = node.input[2] if len(node.input) > 2 else ""
        zero = numpy_helper.to_array(initializers[zero_name]) if zero_name in initializers else None
        if weight.dtype != np.int8 or len(consumers[node.input[0]]) != 1 or (zero is not None and zero.any()) \
                or (zero_name and zero is None):
            continue
        initializers[node.input[0]].CopyFrom(
            numpy_helper.from_array((weight.astype(np.int16) + 128).astype(np.uint8), node.input[0]))
        unsigned_zero = f"{node.input[0]}_zero_point_u8"
        shape = zero.shape if zero is not None else numpy_helper.to_array(initializers[node.input[1]]).shape \
            if node.input[1] in initializers else ()
        graph.initializer.append(numpy_helper.from_array(np.full(shape, 128, np.uint8), unsigned_zero))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = unsigned_zero
        made += 1
    if made:
        _save_pruned(model, path)
    return made


def signed_where_exact(path: Path, calibration, samples: int = 16) -> dict:
    """Store back as int8 (zero point 0, ORT's faster U8S8 kernels) every uint8 weight of `unsigned_weights` whose
    MatMul gives bit-identical outputs either way on the calibration activations; returns what was chosen.

    U8S8 on x86 without VNNI saturates only where a pair of activation × weight products overflows int16, which
    depends on the layer: on MiniLM the FFN-out MatMuls (a third of the MACs) never did, every other one did. Each
    weight MatMul's quantized input is captured on `samples` calibration items, then run through ORT's own fused
    kernel (MatMulIntegerToFloat) once with the uint8 and once with the int8 weight: integer GEMMs without
    saturation agree exactly, so only layers whose outputs agree (to AGREE) switch. A layer whose probe ORT
    does not fuse into an integer kernel stays uint8 (a float MatMul would agree by construction)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    candidates = _unsigned_matmuls(graph, initializers)
    chosen = {"signed": [], "kept_unsigned": [], "samples": 0}
    if not candidates or calibration is None or not len(calibration):
        return chosen
    captured = {a_q.output[0]: [] for _, _, a_q, _ in candidates}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for _, _, a_q, _ in candidates:  # the quantized activations, typed as their zero point
        zero = numpy_helper.to_array(initializers[a_q.input[2]]) if len(a_q.input) > 2 else np.zeros((), np.uint8)
        probe.graph.output.append(helper.make_tensor_value_info(
            a_q.output[0], helper.np_dtype_to_tensor_dtype(zero.dtype), None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(KEEP_DEDICATED_PAIRS))
    wanted = {i.name for i in session.get_inputs()}
    for feeds in list(calibration)[:samples]:
        values = session.run(list(captured), {k: v for k, v in feeds.items() if k in wanted})
        for name, value in zip(captured, values):
            captured[name].append(value.reshape(-1, value.shape[-1]))
    chosen["samples"] = min(samples, len(calibration))
    for matmul, a_dq, a_q, w_dq in candidates:
        # the captured integers as the floats they stand for: the probe's QuantizeLinear gives them back exactly
        scale = numpy_helper.to_array(initializers[a_dq.input[1]]).astype(np.float32)
        zero_point = numpy_helper.to_array(initializers[a_dq.input[2]]).astype(np.float32)
        rows = ((np.concatenate(captured[a_q.output[0]]).astype(np.float32) - zero_point) * scale).astype(np.float32)
        weight = numpy_helper.to_array(initializers[w_dq.input[0]])
        signed = (weight.astype(np.int16) - 128).astype(np.int8)
        signed_zero = np.zeros(numpy_helper.to_array(initializers[w_dq.input[2]]).shape, np.int8)
        outputs = []
        for w, zero in ((weight, numpy_helper.to_array(initializers[w_dq.input[2]])), (signed, signed_zero)):
            inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(zero, "w_zero"),
                     *(numpy_helper.from_array(numpy_helper.to_array(initializers[source]), name)
                       for source, name in ((w_dq.input[1], "w_scale"), (a_dq.input[1], "a_scale"),
                                            (a_dq.input[2], "a_zero")))]
            small = helper.make_graph(  # Q → DQ on the activation as in the model: ORT fuses that pattern
                [helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero"], ["a_q"]),
                 helper.make_node("DequantizeLinear", ["a_q", "a_scale", "a_zero"], ["a_dq"]),
                 helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"],
                                  **{a.name: helper.get_attribute_value(a) for a in w_dq.attribute}),
                 helper.make_node("MatMul", ["a_dq", "w_dq"], ["y"])], "probe",
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(rows.shape))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
            small_model = helper.make_model(small, opset_imports=[helper.make_opsetid("", 17)])
            small_model.ir_version = model.ir_version
            outputs.append(_integer_matmul_outputs(small_model, rows))
        exact = outputs[0] is not None and outputs[1] is not None and \
            float(np.linalg.norm(outputs[1] - outputs[0])) <= AGREE * float(np.linalg.norm(outputs[0]))
        if exact:
            _sign_weight(graph, initializers, w_dq)
        chosen["signed" if exact else "kept_unsigned"].append(matmul.name)
    if chosen["signed"]:
        _save_pruned(model, path)
    return chosen


def _unsigned_weight(dq, initializers) -> bool:
    """Whether `dq` dequantizes a weight as `unsigned_weights` stores it: uint8 with every zero point 128."""
    from onnx import TensorProto, numpy_helper

    if dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[0] not in initializers \
            or dq.input[2] not in initializers or initializers[dq.input[0]].data_type != TensorProto.UINT8:
        return False
    zero = numpy_helper.to_array(initializers[dq.input[2]])
    return zero.dtype.kind == "u" and bool((zero == 128).all())


def _unsigned_matmuls(graph, initializers) -> list:
    """(MatMul, activation DQ, activation Q, weight DQ) for every MatMul on a weight `unsigned_weights` stored as
    uint8 whose activation comes through QuantizeLinear → DequantizeLinear with constant scale and zero point."""
    producer = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        a_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if a_dq is None or w_dq is None or a_dq.op_type != "DequantizeLinear" \
                or not _unsigned_weight(w_dq, initializers):
            continue
        a_q = producer.get(a_dq.input[0])
        if a_q is not None and a_q.op_type == "QuantizeLinear" and len(a_dq.input) == 3 \
                and all(i in initializers for i in a_dq.input[1:]):
            found.append((node, a_dq, a_q, w_dq))
    return found


def _sign_weight(graph, initializers, w_dq) -> None:
    """Store a weight `unsigned_weights` made uint8 (zero point 128) back as int8 with zero point 0: same values."""
    import numpy as np
    from onnx import numpy_helper

    weight = numpy_helper.to_array(initializers[w_dq.input[0]])
    initializers[w_dq.input[0]].CopyFrom(
        numpy_helper.from_array((weight.astype(np.int16) - 128).astype(np.int8), w_dq.input[0]))
    zero_name = f"{w_dq.input[0]}_zero_point_s8"
    shape = numpy_helper.to_array(initializers[w_dq.input[2]]).shape
    graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.int8), zero_name))
    w_dq.input[2] = zero_name


def seven_bit_activations(path: Path) -> dict:
    """Give every weight MatMul still on uint8 weights int8 weights and a 7-bit activation grid; returns the layers.

    ORT's U8S8 kernels on x86 without VNNI add pairs of u8 × s8 products into int16 with saturation (vpmaddubsw):
    with activation codes of at most 127 a pair is at most 2 × 127 × 128 = 32 512, which cannot saturate, so the
    faster kernel is exact. The layer's dedicated activation pair (QuantizeLinear → DequantizeLinear, per tensor)
    gets uint8 codes 0-127 over the same calibrated range: scale × 255/127, the zero point moved onto that grid
    (an int8 zero point is first read as its uint8 code). That halves the activation resolution of those layers;
    values beyond the calibrated range still quantize up to code 255, where a pair can saturate again, instead of
    clipping at the range's end. Layers whose pair is shared or per channel are left as they are."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    layers, requantized = [], set()
    for node, a_dq, a_q, w_dq in _unsigned_matmuls(graph, initializers):
        if list(a_q.input[1:]) != list(a_dq.input[1:]) or len(consumers.get(a_q.output[0], [])) != 1 \
                or len(consumers.get(a_dq.output[0], [])) != 1:
            continue
        scale = numpy_helper.to_array(initializers[a_dq.input[1]])
        zero = numpy_helper.to_array(initializers[a_dq.input[2]])
        if scale.size != 1 or zero.dtype.kind not in "iu":
            continue
        code = int(zero) + (128 if zero.dtype == np.int8 else 0)
        scale_name, zero_name = f"{a_dq.output[0]}_scale_7bit", f"{a_dq.output[0]}_zero_point_7bit"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(float(scale) * 255 / 127, np.float32).reshape(scale.shape), scale_name),
            numpy_helper.from_array(np.array(int(np.floor(code * 127 / 255 + 0.5)), np.uint8).reshape(zero.shape),
                                    zero_name)])
        for pair_node in (a_q, a_dq):
            pair_node.input[1], pair_node.input[2] = scale_name, zero_name
        _sign_weight(graph, initializers, w_dq)
        requantized.add(a_q.output[0])
        layers.append(node.name)
    if layers:  # the requantized tensors are uint8 now: drop their recorded (int8) types
        kept = [v for v in graph.value_info if v.name not in requantized]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        _save_pruned(model, path)
    return {"layers": layers, "activation_codes": "uint8 0-127 (7 bits)", "weights": "int8 (U8S8 kernels)"}


def _save_pruned(model, path: Path) -> None:
    """Save `model` to `path` without the initializers no node reads any more (the replaced weights and zero points)."""
    import onnx

    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(path))


AGREE = 1e-4  # relative L2 difference that still counts as the same outputs: a stray saturated pair, no more
# (MiniLM: the FFN-out MatMuls 0 or 5e-5; every other layer 0.009-0.04)


def _integer_matmul_outputs(model, rows):
    """The probe's outputs on `rows`, or None when ORT does not run its MatMul as an integer kernel."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgesdk-u8s8-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    if not ops & set(INTEGER_MATMULS):
        return None
    return session.run(None, {"a": rows})[0]


def gather_before_dequantize(path: Path) -> int:
    """Move every constant DequantizeLinear that only feeds Gathers behind them: gather the quantized rows, then
    dequantize just those. Returns the tables rewritten.

    NNCF stores the embedding tables as int8 with a scale per row. ORT then dequantizes the whole table on every
    run before gathering a few rows: for MiniLM's 30 522 × 384 word embeddings that was 8.8 of 63 ms at batch 1,
    seq 128 (ORT's profiler, 3 DequantizeLinear nodes), and it is paid again per batch. Per-row scales (axis 0)
    become Gather(table) → Cast → Mul by the gathered scales (minus the gathered zero points when there are any);
    a per-tensor or per-column scale stays one DequantizeLinear on the gathered rows. The values are the same
    products of the same integers and scales, so the outputs are bit-identical (tested); only standard ops are
    used. Tables the rewrite cannot prove equivalent (Gather on another axis, other consumers) are left alone."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    made = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        table, scale_name = dq.input[0], dq.input[1]
        zero_name = dq.input[2] if len(dq.input) > 2 else ""
        users = consumers.get(dq.output[0], [])
        attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
        if table not in initializers or scale_name not in initializers or (zero_name and zero_name not in
                                                                           initializers) \
                or dq.output[0] in outputs or not users or set(attrs) - {"axis"}:
            continue
        if len(initializers[table].dims) != 2:  # an embedding table: [rows, width]
            continue
        axis = attrs.get("axis", 1) % 2
        per_tensor = not initializers[scale_name].dims or initializers[scale_name].dims == [1]
        gathers = [u for u in users if u.op_type == "Gather" and u.input[0] == dq.output[0]
                   and {a.name: helper.get_attribute_value(a) for a in u.attribute}.get("axis", 0) % 2 == 0]
        if len(gathers) != len(users):
            continue
        zero = numpy_helper.to_array(initializers[zero_name]) if zero_name else None
        for index, gather in enumerate(gathers):
            new_nodes = []
            tag = f"{dq.name}_gathered_{index}"
            ids, out = gather.input[1], gather.output[0]
            new_nodes.append(helper.make_node("Gather", [table, ids], [f"{tag}_rows"], f"{tag}_rows", axis=0))
            if per_tensor or axis == 1:  # one scale for every gathered row: a DequantizeLinear on the rows
                new_nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_rows", *dq.input[1:]], [out], tag,
                                                  axis=-1))
                _replace(graph, gather, new_nodes)
                continue
            new_nodes.append(helper.make_node("Cast", [f"{tag}_rows"], [f"{tag}_float"], f"{tag}_float",
                                              to=onnx.TensorProto.FLOAT))
            values = f"{tag}_float"
            axes = f"{tag}_axes"
            graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            if zero is not None and zero.any():
                new_nodes += [helper.make_node("Gather", [zero_name, ids], [f"{tag}_zp"], f"{tag}_zp", axis=0),
                              helper.make_node("Cast", [f"{tag}_zp"], [f"{tag}_zpf"], f"{tag}_zpf",
                                               to=onnx.TensorProto.FLOAT),
                              helper.make_node("Unsqueeze", [f"{tag}_zpf", axes], [f"{tag}_zpu"], f"{tag}_zpu"),
                              helper.make_node("Sub", [values, f"{tag}_zpu"], [f"{tag}_centred"], f"{tag}_sub")]
                values = f"{tag}_centred"
            new_nodes += [helper.make_node("Gather", [scale_name, ids], [f"{tag}_scale"], f"{tag}_scale", axis=0),
                          helper.make_node("Unsqueeze", [f"{tag}_scale", axes], [f"{tag}_scale_col"],
                                           f"{tag}_scale_col"),
                          helper.make_node("Mul", [values, f"{tag}_scale_col"], [out], f"{tag}_mul")]
            _replace(graph, gather, new_nodes)
        graph.node.remove(dq)
        made += 1
    if made:
        onnx.save(model, str(path))
    return made


def _consumers(graph) -> dict[str, list]:
    """Tensor name → the nodes that read it, in graph order."""
    found: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _replace(graph, node, new_nodes: list) -> None:
    """Put new_nodes where node was (its inputs are computed before it: the order stays topological)."""
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(new_nodes):
        graph.node.insert(at + offset, new)


KEEP_DEDICATED_PAIRS = ("CommonSubexpressionElimination",)  # ORT's CSE would merge the dedicated pairs again
NO_SKIP_LAYER_NORM = ("SkipLayerNormFusion",)  # the session would fuse Add + LayerNormalization by itself
INTEGER_MATMULS = ("MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
                   "QAttention", "MatMulNBits")
FLOAT_MATMULS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Attention", "MultiHeadAttention")


INTEGER_CONVS = ("QLinearConv", "ConvInteger", "NhwcQLinearConv")
FLOAT_CONVS = ("Conv", "FusedConv", "NhwcFusedConv")


def kernels_run(model_path: Path, disabled_optimizers=()) -> dict:
    """What ONNX Runtime's CPU provider actually runs: the graph after its session optimisations, with the weight
    MatMuls counted as integer or float kernels (a QDQ pair ORT cannot fuse leaves a float MatMul behind)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgesdk-ort-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the "hardware specific optimizations" warning of saving it is expected
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(disabled_optimizers))
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"integer_matmuls": sum(ops.get(o, 0) for o in INTEGER_MATMULS),
            "float_matmuls": sum(ops.get(o, 0) for o in FLOAT_MATMULS),
            "integer_convs": sum(ops.get(o, 0) for o in INTEGER_CONVS),
            "float_convs": sum(ops.get(o, 0) for o in FLOAT_CONVS),
            "by_op": {o: ops[o] for o in (*INTEGER_MATMULS, *FLOAT_MATMULS, *INTEGER_CONVS, *FLOAT_CONVS)
                      if ops.get(o)},
            "quantize_ops": ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0),
            "dequantize_ops": ops.get("DequantizeLinear", 0), "ops_after_session_optimisation": dict(sorted(ops.items()))}


def float_op_nodes(onnx_path: Path, float_ops: tuple[str, ...]) -> list[str]:
    """Node names a QuantSpec's float_ops select: op types ('MatMul') or node-name regexes."""
    import re

    if not float_ops:
        return []
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = {op for op in float_ops if re.fullmatch(r"[A-Z][A-Za-z0-9]*", op)}
    patterns = [re.compile(op) for op in float_ops if op not in types]
    return [n.name for n in model.graph.node if n.op_type in types or any(p.search(n.name) for p in patterns)]


def _yes_no(value: str) -> bool:
    if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() in ("true", "yes", "1")


BACKEND = Backend(
    name="onnxruntime", convert=convert, device=ORTDevice, precisions=("fp32", "int8"), extra="onnxruntime",
    requires=("onnxruntime", "nncf"),
    options=(BackendOption("--ort-integer-kernels", "integer_kernels", _yes_no,
                           "true (default): static INT8 runs ORT's integer MatMul kernels (a Q/DQ pair per "
                           "consumer); false: NNCF's shared pairs, float kernels"),
             BackendOption("--ort-weights", "weights", str,
                           "u8 (default): static INT8 weights stored as uint8 for ORT's U8U8 kernels, which do not "
                           "saturate on x86 CPUs without VNNI; s8: int8 weights (U8S8 kernels, faster on VNNI/AMX "
                           "x86 and ARM)"),
             BackendOption("--ort-seven-bit-activations", "seven_bit_activations", _yes_no,
                           "true (default): with u8 weights, layers whose U8S8 kernels would saturate get int8 "
                           "weights and 7-bit activation codes instead (faster, half the activation resolution "
                           "there); false: they keep the exact U8U8 kernels"),
             BackendOption("--ort-fusion", "fusion", _yes_no,
                           "true (default): FP32 and dynamic INT8 use ORT's transformer fusions (Attention, "
                           "SkipLayerNormalization, ...; QAttention in INT8); false: standard ops only"),
             BackendOption("--ort-skip-layer-norm", "skip_layer_norm", _yes_no,
                           "false (default): residual Add + LayerNormalization stay standard ops (ORT's "
                           "SkipLayerNormalization CPU kernel made MiniLM 5-8 percent slower); true: fuse them"),),
    tools=("onnxruntime", "onnx", "nncf"),
    spec={"mode": ("static", "dynamic"), "calibration_method": ("minmax", "percentile", "mse"),
          "weight_granularity": ("per_channel",), "weight_symmetric": (True,), "activation_dtype": ("int8",),
          "activation_symmetric": (True, False), "smooth_quant": (True, False), "float_ops": ("*",)},
    memory=RuntimeModel("onnxruntime", "arena+pattern", False, False, False, 8 * MB, True,
                        "run 1 allocates tensor by tensor from the BFC arena; from run 2 the memory pattern is one "
                        "extra block beside it",
                        int4=(True, "MatMulNBits via onnxruntime.quantization.matmul_nbits_quantizer (CPU EP); "
                                    "edgesdk export does not build it yet")),
)
