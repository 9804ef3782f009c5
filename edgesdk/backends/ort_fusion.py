"""ONNX Runtime's transformer fusions for the onnxruntime target: Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization (`onnxruntime.transformers.optimizer`, model_type bert), applied offline.

The fusions are ORT contrib ops that only ONNX Runtime runs: the tensorrt (jetson) backend never calls this, its
ONNX stays standard ops. They are matched on the frontend's FP32 export as it came (`SourceModel.onnx_path`), not
on the onnxslim-optimised graph: onnxslim merges the two Reshapes of transformers 5's attention-mask path, after
which ORT no longer recognises the mask and fuses no Attention (measured on all-minilm-l6-v2: 0 of 6). The head
count is read from the graph (the constant [heads, head_size] of the Q/K/V Reshapes), so no config is needed.
What did not fuse is reported, never guessed: a graph with no Attention fused is still returned, with its counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
             "EmbedLayerNormalization", "LayerNormalization")


@dataclass
class Fusion:
    """What the fusion pass did: fused op counts, and, per fused node, the source nodes it replaced (so names the
    fallback loop ranks on the unfused graph still find the node that now holds them)."""

    applied: dict[str, int]
    num_heads: int
    hidden_size: int
    absorbed: dict[str, str] = field(default_factory=dict)  # source node name → fused node name

    def to_dict(self) -> dict:
        return {"tool": "onnxruntime.transformers.optimizer", "model_type": "bert", "applied": self.applied,
                "num_heads": self.num_heads, "hidden_size": self.hidden_size}


def heads_and_hidden(model) -> tuple[int, int]:
    """(num_heads, hidden_size) from the graph: the most common [heads, head_size] tail of the constant shapes the
    attention Reshapes take (transformers 5 writes heads as -1: it is then the projection's width / head_size, that
    width read from the MatMul weight feeding the Reshape through its bias Add); (0, 0) if none is found."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in model.graph.node for o in n.output}
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        tail = _shape_tail(node.input[1], consts, producer)
        width = _projection_width(node.input[0], consts, producer)
        if tail is None or width is None:
            continue
        heads, size = tail
        if heads == -1 and size > 0 and width % size == 0:
            heads = width // size
        if heads > 0 and heads * size == width:
            found[(heads, size)] += 1
    if not found:
        return 0, 0
    heads, size = found.most_common(1)[0][0]
    return heads, heads * size


def _shape_tail(name: str, consts, producer) -> tuple[int, int] | None:
    if name in consts and consts[name].size == 4:
        return tuple(int(v) for v in consts[name].reshape(-1)[2:])
    node = producer.get(name)
    if node is not None and node.op_type == "Concat" and len(node.input) == 4:
        parts = [consts.get(i) for i in node.input[2:]]
        if all(p is not None and p.size == 1 for p in parts):
            return tuple(int(p.reshape(-1)[0]) for p in parts)
    return None


def _projection_width(name: str, consts, producer) -> int | None:
    node = producer.get(name)
    if node is not None and node.op_type == "Add":
        node = next((producer[i] for i in node.input if i in producer and producer[i].op_type == "MatMul"), None)
    if node is None or node.op_type != "MatMul":
        return None
    weight = next((consts[i] for i in node.input if i in consts and consts[i].ndim == 2), None)
    return int(weight.shape[1]) if weight is not None else None


def fuse(src: Path, dst: Path, skip_layer_norm: bool = True) -> Fusion:
    """Write `src` with ORT's BERT fusions applied to `dst`; returns what was fused (counts may all be 0).
    `skip_layer_norm=False` leaves each residual Add + LayerNormalization as standard ops."""
    import logging

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(src))
    heads, hidden = heads_and_hidden(model)
    source = onnx.ModelProto()
    source.CopyFrom(model)  # optimize_model rewrites the model it is given in place
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "failed to detect num_heads" style warnings are reported by the counts instead
    try:
        options = FusionOptions("bert")
        options.enable_skip_layer_norm = skip_layer_norm
        fused = optimize_model(model, model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
                               optimization_options=options)
    finally:
        quiet.setLevel(level)
    fused.save_model_to_file(str(dst))
    graph = fused.model.graph
    counts = Counter(n.op_type for n in graph.node)
    applied = {op: counts[op] for op in FUSED_OPS if counts.get(op)}
    return Fusion(applied, heads, hidden, _absorbed(source, graph))


def _absorbed(source, fused_graph) -> dict[str, str]:
    """Source MatMuls gone from the fused graph, mapped to the Attention node that took them: the projections that
    read one activation form a layer's Q/K/V group; groups and Attention nodes pair up in graph order."""
    after = {n.name for n in fused_graph.node}
    weights = {i.name for i in source.graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in source.graph.node:
        if node.op_type == "MatMul" and node.name not in after:
            activation = next((i for i in node.input if i not in weights), "")
            groups.setdefault(activation, []).append(node.name)
    groups = {k: v for k, v in groups.items() if len(v) == 3}
    attention = [n.name for n in fused_graph.node if n.op_type in ("Attention", "MultiHeadAttention")]
    if len(groups) != len(attention):
        return {}
    return {name: fused for fused, names in zip(attention, groups.values()) for name in names}
