#!/usr/bin/env python3
"""edgesdk bundles vs the peer pipelines a user could build by hand from the same model, in one process.

    python scripts/bench_peers.py dist/all-minilm-l6-v2-onnxruntime-int8 [MORE_BUNDLES...] --threads 1 --seq 128 \
        [--data ../shared/data/stsb/dev.tsv --sentences 200] [--json peers.json]

Peers, all built here from the first bundle's source model (manifest model.source): PyTorch FP32 eager (the
baseline), PyTorch `quantize_dynamic` (qint8 Linear), ONNX Runtime with its BERT fusions (FP32), those fusions +
ORT `quantize_dynamic` (s8 per-channel), and OpenVINO `nncf.compress_weights` INT8 (f32 hint). Latency is p50 of
batch 1 at --seq, every pipeline interleaved with the others (a shared CPU hurts all alike). Fidelity is the
cosine of pooled embeddings vs PyTorch FP32 over STS-B sentences (skipped when --data is absent). Three floors
run in the same rotation: the model's matrix products alone (every weight GEMM as [seq, K] x [K, N], plus Q·Kᵀ
and P·V per attention block) in ONNX Runtime, as fp32 MatMul and as MatMulInteger with u8 and s8 weights; every
row's "vs int8 floor" divides by the faster int8 one. Needs the export extra plus onnxruntime and openvino.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_corpus import bundle_labels, read_corpus  # noqa: E402
from bench_vs_pytorch import interleaved_arguments, torch_model  # noqa: E402
from edgesdk.runtime import load  # noqa: E402
from edgesdk.runtime.bench import BenchConfig, feeds_for, run_interleaved, timer  # noqa: E402
from edgesdk.runtime.text import pool  # noqa: E402
from edgesdk.runtime.verify import cosine_rows  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/stsb/dev.tsv"


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    from edgesdk.runtime.onnxruntime import session_options

    session = ort.InferenceSession(str(path), session_options(ort, threads), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def openvino_weight_int8(onnx_path: Path, threads: int):
    import nncf
    import openvino as ov

    model = nncf.compress_weights(ov.convert_model(str(onnx_path)), mode=nncf.CompressWeightsMode.INT8_SYM)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      "INFERENCE_NUM_THREADS": threads})
    return lambda feeds: compiled(feeds)[0]


def model_gemms(onnx_path: Path, seq: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (A shape, B shape) of every matrix product the model computes at batch 1, `seq` tokens: each MatMul/Gemm
    on a 2-D weight as [seq, K] x [K, N], and per attention block (one per Softmax) Q·Kᵀ and P·V over the heads."""
    import onnx
    from onnx import numpy_helper

    from edgesdk.backends.ort_fusion import heads_and_hidden

    model = onnx.load(str(onnx_path))
    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    gemms = []
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if shape is not None and len(shape) == 2:
            k, n = shape[::-1] if node.op_type == "Gemm" and any(
                a.name == "transB" and a.i for a in node.attribute) else shape
            gemms.append(((seq, k), (k, n)))
    heads, hidden = heads_and_hidden(model)
    if heads:
        size = hidden // heads
        for _ in range(sum(n.op_type == "Softmax" for n in model.graph.node)):
            gemms += [((heads, seq, size), (heads, size, seq)), ((heads, seq, seq), (heads, seq, size))]
    return gemms


def gemm_floor(gemms, weights: str, threads: int):
    """A run(feeds) doing nothing but the model's matrix products in ONNX Runtime, on random data: the floor any
    pipeline built on those kernels is measured against. weights "u8"/"s8": MatMulInteger with uint8 activations
    (ORT's U8U8 / U8S8 kernels), "fp32": MatMul. 2-D weights are initializers, so ORT prepacks them as it does a
    model's; the attention products take both operands as inputs, as in the model. The feeds a caller passes are
    ignored."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.runtime.onnxruntime import session_options

    rng = np.random.default_rng(0)
    a_type, a_dtype = (TensorProto.FLOAT, np.float32) if weights == "fp32" else (TensorProto.UINT8, np.uint8)
    b_dtype = {"u8": np.uint8, "s8": np.int8, "fp32": np.float32}[weights]

    def values(shape, dtype):
        if dtype == np.float32:
            return rng.standard_normal(shape).astype(np.float32)
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)

    nodes, inputs, outputs, initializers, feeds = [], [], [], [], {}
    for i, (a, b) in enumerate(gemms):
        inputs.append(helper.make_tensor_value_info(f"a{i}", a_type, list(a)))
        feeds[f"a{i}"] = values(a, a_dtype)
        if len(b) == 2:  # a weight
            initializers.append(numpy_helper.from_array(values(b, b_dtype), f"b{i}"))
        else:  # the attention products: both operands computed
            inputs.append(helper.make_tensor_value_info(f"b{i}", a_type, list(b)))
            feeds[f"b{i}"] = values(b, a_dtype)
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT if weights == "fp32"
                                                     else TensorProto.INT32, None))
        nodes.append(helper.make_node("MatMul" if weights == "fp32" else "MatMulInteger", [f"a{i}", f"b{i}"],
                                      [f"y{i}"]))
    model = helper.make_model(helper.make_graph(nodes, "gemms", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), session_options(ort, threads),
                                   providers=["CPUExecutionProvider"])
    return lambda _feeds: session.run(None, feeds)


def peers(source: str, work: Path, threads: int) -> tuple[dict, Path]:
    """name → run(feeds) -> last_hidden_state for every peer pipeline (the first is the FP32 reference), and the
    model's FP32 ONNX export they were built from."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import onnx

    from edgesdk.backends.ort_fusion import fuse
    from edgesdk.frontends import load_source

    exported = load_source(source, work, None, opset=17).onnx_path
    fusion = fuse(exported, work / "fused.onnx")
    print(f"ORT fusion: {fusion.applied}")
    quantize_dynamic(str(work / "fused.onnx"), str(work / "fused_dynamic.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"PyTorch FP32 eager": torch_model(source, threads),
            "PyTorch quantize_dynamic": torch_model(source, threads, dynamic_int8=True),
            "ORT fusion FP32": ort_session(work / "fused.onnx", threads),
            "ORT fusion + quantize_dynamic s8": ort_session(work / "fused_dynamic.onnx", threads),
            "OpenVINO compress_weights INT8": openvino_weight_int8(exported, threads)}, exported


def embeddings(run, tokenize, texts: list[str], batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch):
        feeds = tokenize(texts[i:i + batch])
        out.append(pool(run(feeds), feeds["attention_mask"], "mean", True))
    return np.concatenate(out)


def main() -> int:
    parser = interleaved_arguments(__doc__, 40)
    parser.add_argument("--data", default=str(DATA), help="STS-B TSV for fidelity (skipped if absent)")
    parser.add_argument("--sentences", type=int, default=200)
    args = parser.parse_args()
    runners = [load(b, threads=args.threads) for b in args.bundles]
    first = runners[0]
    with tempfile.TemporaryDirectory(prefix="edgesdk-peers-") as tmp:
        pipelines, exported = peers(first.manifest.model.source, Path(tmp), args.threads)
        labels = bundle_labels(args.bundles)
        runs = {**pipelines, **{label: (lambda r: lambda f: r.run(f)[r.outputs[0].name])(r)
                                for label, r in zip(labels, runners)}}
        tokenize = {**{name: first.tokenize for name in pipelines},
                    **{label: r.tokenize for label, r in zip(labels, runners)}}
        gemms = model_gemms(exported, args.seq)
        macs = sum(int(np.prod(a)) * b[-1] for a, b in gemms)
        floors = {f"floor: the model's {len(gemms)} GEMMs only, {kind}": gemm_floor(gemms, kind, args.threads)
                  for kind in ("fp32", "u8", "s8")}
        fidelity = {}
        if Path(args.data).is_file():
            texts = read_corpus(args.data)[: args.sentences]
            reference = embeddings(runs["PyTorch FP32 eager"], first.tokenize, texts)
            for name, run in runs.items():
                cos = cosine_rows(embeddings(run, tokenize[name], texts), reference)
                fidelity[name] = {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}
        else:
            print(f"no {args.data}: fidelity skipped")
        feeds = {name: feeds_for(r, 1, args.seq) for name, r in zip(runs, [first] * len(pipelines) + runners)}
        runs.update(floors)
        timed = [timer(run, feeds.get(name, {})) for name, run in runs.items()]
        sinks = [[] for _ in timed]
        run_interleaved(timed, sinks, BenchConfig(threads=args.threads, seq=args.seq, warmup=args.warmup,
                                                  iterations=args.iterations))
    p50 = {name: float(np.percentile(s, 50)) for name, s in zip(runs, sinks)}
    base = p50["PyTorch FP32 eager"]
    floor = min(p50[name] for name in floors if not name.endswith("fp32"))
    print(f"seq {args.seq}, batch 1, {args.threads} thread(s), {args.iterations} interleaved iterations; "
          f"fidelity: {args.sentences} sentences of {Path(args.data).name} vs PyTorch FP32; the floors run the "
          f"model's matrix products alone ({macs / 1e9:.2f} GMAC; int8 floor = the faster of u8/s8, "
          f"{macs / floor / 1e6:.0f} GMAC/s)")
    print(f"{'pipeline':44} {'p50 ms':>8} {'vs eager':>9} {'vs int8 floor':>13} {'cos mean':>9} {'cos min':>9}")
    rows = {}
    for name, value in p50.items():
        fid = fidelity.get(name, {})
        rows[name] = {"p50_ms": round(value, 3), "ratio_vs_eager": round(value / base, 3),
                      "ratio_vs_int8_floor": round(value / floor, 3), **fid}
        print(f"{name[:44]:44} {value:8.2f} {value / base:9.3f} {value / floor:13.2f} "
              f"{fid.get('cosine_mean', float('nan')):9.5f} {fid.get('cosine_min', float('nan')):9.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "pipelines": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
