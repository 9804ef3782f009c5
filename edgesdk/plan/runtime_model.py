"""How each runtime really holds a model in memory, measured on this project's runtimes (see docs/plan.md).

A graph's ideal liveness peak is a lower bound; runtimes pay more, in ways that can be modelled:
- OpenVINO (CPU) memory-maps model.bin, so the whole file image stays resident, and repacks every MatMul weight into
  its own blocked layout beside it. A model with dynamic axes cannot use the static memory solver: activations share
  memory as whole *sets* of non-overlapping tensors, each set as large as its largest member (liveness.reuse_sets).
  In an int8 (FakeQuantize) model it decompresses integer embedding tables to f32 at compile, and each attention
  node keeps a private f32 score buffer (ov_graph._attention_scratch).
  The Python API copies the outputs (share_outputs=False), and the first compile + run pages in plugin code and
  oneDNN JIT kernels (a fixed cost, measured on a 2-layer model).
- ONNX Runtime (CPU): the first run of a new shape allocates tensor by tensor from its BFC arena, which reuses a
  freed chunk only for a request that fits it (modelled as liveness.reuse_sets); from the second run the memory
  pattern recorded in run 1 is allocated as one block (liveness.offset_plan) *beside* the arena's chunks, which the
  arena keeps. Steady state after two runs = both. Measured: 1.7 GB after run 1, 2.9 GB after run 2 at 32 x 512.
- TensorRT and TFLite have no measurement here yet: the ideal liveness peak and one copy of the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .estimate import MB, WeightBytes
from .liveness import Graph, analyse, offset_plan, reuse_sets


@dataclass(frozen=True)
class RuntimeModel:
    backend: str
    allocator: str  # "liveness" | "offset" | "sets" | "arena+pattern"
    repacks_matmul: bool  # a second copy of the MatMul weights, in the runtime's own layout
    output_copy: bool  # the Python binding copies the outputs out of the runtime's buffers
    decompresses_embeddings: bool  # an integer Gather table is decompressed to f32 at compile
    overhead: int  # code + JIT kernels paged in by the first load and run (bytes)
    measured: bool  # calibrated against this machine's measurements (docs/plan.md)
    note: str

    def activations(self, graph: Graph) -> int:
        if self.allocator == "arena+pattern":
            peak = reuse_sets(graph) + offset_plan(graph)
        elif self.allocator == "sets":
            peak = reuse_sets(graph)
        elif self.allocator == "offset":
            peak = offset_plan(graph)
        else:
            peak = analyse(graph).peak_bytes
        outputs = sum(graph.sizes.get(o, 0) for o in graph.outputs
                      if not o.endswith(":scratch")) if self.output_copy else 0
        return peak + outputs

    def runtime_copies(self, weights: WeightBytes, embedding_elems_int: int = 0) -> int:
        """Bytes the runtime holds beside the file image: repacked MatMul weights, f32 copies of int8 tables."""
        copies = weights.matmul if self.repacks_matmul else 0
        return copies + (4 * embedding_elems_int if self.decompresses_embeddings else 0)

    def to_dict(self) -> dict:
        return asdict(self)


RUNTIME_MODELS = {
    "openvino": RuntimeModel("openvino", "sets", True, True, True, 32 * MB, True,
                             "model.bin memory-mapped + MatMul weights repacked; dynamic-shape activations share "
                             "memory per set of non-overlapping tensors"),
    "onnxruntime": RuntimeModel("onnxruntime", "arena+pattern", False, False, False, 8 * MB, True,
                                "run 1 allocates tensor by tensor from the BFC arena; from run 2 the memory "
                                "pattern is one extra block beside it"),
    "tensorrt": RuntimeModel("tensorrt", "liveness", False, False, False, 0, False,
                             "not measured: ideal liveness and one copy of the weights (TensorRT plans its own "
                             "activation memory at build time)"),
    "tflite": RuntimeModel("tflite", "liveness", False, False, False, 0, False,
                           "not measured: ideal liveness and one copy of the weights (the TFLite arena planner)"),
}


def runtime_model(backend: str) -> RuntimeModel:
    return RUNTIME_MODELS.get(backend, RUNTIME_MODELS["tensorrt"])
