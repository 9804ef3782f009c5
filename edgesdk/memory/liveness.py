"""Liveness over a runtime-neutral graph: which activation tensors are alive at once, and the peak of their bytes.

The planner's frontends (ONNX, OpenVINO's runtime model) lower a model to a `Graph`: ops in execution order, each
naming the tensors it reads and writes, plus every tensor's byte size. Weights (initializers, constants) and graph
inputs are accounted separately and never enter the liveness set. Walking the ops in order, an op's outputs are
allocated while its inputs are still alive (a kernel reads its inputs while writing its outputs); after the op, every
input whose last consumer it was is freed, and an output nobody reads is freed at once. Graph outputs live to the end.
A *view* output (Reshape, Squeeze, ... — every runtime implements them in place) aliases its input's buffer: it
allocates nothing and keeps the buffer alive until the last consumer of any alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Op:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    views: bool = False  # outputs[0] aliases inputs[0] (no new buffer)


@dataclass(frozen=True)
class Graph:
    """Ops in execution order; `sizes` maps every activation tensor to bytes (weights/inputs are not in it)."""

    ops: tuple[Op, ...]
    sizes: dict[str, int]
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Liveness:
    peak_bytes: int
    peak_op: str  # the op during which the peak happens
    peak_tensors: tuple[str, ...]  # the buffers alive at the peak, largest first
    allocated_bytes: int  # sum of every buffer ever allocated (no reuse at all)
    steps: tuple[int, ...] = field(repr=False, default=())  # live bytes during each op


def analyse(graph: Graph) -> Liveness:
    """Peak of simultaneously live activation bytes, executing `graph.ops` in order."""
    root = _alias_roots(graph)
    last_use = _last_uses(graph, root)
    live: dict[str, int] = {}
    peak, peak_op, peak_set, total, steps = 0, "", (), 0, []
    for index, op in enumerate(graph.ops):
        for out in op.outputs:
            buffer = root.get(out, out)
            if buffer == out and out in graph.sizes and out not in live:
                live[out] = graph.sizes[out]
                total += graph.sizes[out]
        current = sum(live.values())
        steps.append(current)
        if current > peak:
            peak, peak_op = current, op.name
            peak_set = tuple(sorted(live, key=live.get, reverse=True))
        for name in {root.get(t, t) for t in (*op.inputs, *op.outputs)}:
            if name in live and last_use.get(name, -1) <= index:
                del live[name]
    return Liveness(peak, peak_op, peak_set, total, tuple(steps))


def _alias_roots(graph: Graph) -> dict[str, str]:
    """tensor -> the buffer it lives in (itself, or the input buffer a view op aliases)."""
    root: dict[str, str] = {}
    for op in graph.ops:
        if op.views and op.inputs and op.outputs and op.inputs[0] in graph.sizes:
            root[op.outputs[0]] = root.get(op.inputs[0], op.inputs[0])
    return root


def _last_uses(graph: Graph, root: dict[str, str]) -> dict[str, int]:
    """buffer -> index of the last op that reads it (or any alias of it); graph outputs never die."""
    last: dict[str, int] = {}
    for index, op in enumerate(graph.ops):
        for name in (*op.inputs, *op.outputs):
            last[root.get(name, name)] = index
    forever = len(graph.ops)
    for name in graph.outputs:
        last[root.get(name, name)] = forever
    return last


def intervals(graph: Graph) -> list[tuple[int, int, int, str]]:
    """(first op, last op, bytes, name) of every buffer, in allocation order."""
    root = _alias_roots(graph)
    last = _last_uses(graph, root)
    spans, seen = [], set()
    for index, op in enumerate(graph.ops):
        for out in op.outputs:
            if root.get(out, out) == out and out in graph.sizes and out not in seen:
                seen.add(out)
                spans.append((index, last.get(out, index), graph.sizes[out], out))
    return spans


def reuse_sets(graph: Graph) -> int:
    """Bytes when buffers share memory only as whole sets: a buffer joins a set whose members are all dead, and each
    set is as large as its largest member (OpenVINO CPU's plan for dynamic-shape models: one growable block per set of
    non-overlapping tensors, sized by the largest shape seen)."""
    sets: list[list[int]] = []  # [busy until, max bytes]
    for start, end, size, _ in intervals(graph):
        free = [s for s in sets if s[0] < start]
        if free:
            best = max(free, key=lambda s: s[1] if s[1] <= size else -s[1])
            best[0], best[1] = end, max(best[1], size)
        else:
            sets.append([end, size])
    return sum(s[1] for s in sets)


def offset_plan(graph: Graph) -> int:
    """Bytes of one arena when each buffer is placed, in execution order, in the best-fitting gap between the
    buffers alive at that moment (ONNX Runtime's memory-pattern planner; OpenVINO's static memory solver is similar)."""
    placed: list[tuple[int, int, int]] = []  # (offset, size, last op)
    high = 0
    for start, end, size, _ in intervals(graph):
        placed = [p for p in placed if p[2] >= start]
        live = sorted(placed)
        best, cursor, best_gap = None, 0, None
        for offset, length, _ in live:
            gap = offset - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, offset + length)
        offset = best if best is not None else cursor
        placed.append((offset, size, end))
        high = max(high, offset + size)
    return high
