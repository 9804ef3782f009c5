"""How each runtime really holds a model in memory, measured on this project's runtimes (see docs/plan.md).

A graph's ideal liveness peak is a lower bound; runtimes pay more, in ways that can be modelled:
- OpenVINO (CPU) memory-maps model.bin, so the whole file image stays resident, and repacks every MatMul weight into
  its own blocked layout beside it. A model with dynamic axes cannot use the static memory solver: activations share
  memory as whole *sets* of non-overlapping tensors, each set as large as its largest member (liveness.reuse_sets).
  The Python API copies the outputs (share_outputs=False), and the first compile + run pages in plugin code and
  oneDNN JIT kernels (a fixed cost, measured on a 2-layer model).
- ONNX Runtime (CPU) copies the initializers out of the protobuf into its own buffers; its memory-pattern planner
  places activations in one arena, each at the best-fitting gap (liveness.offset_plan).
- TensorRT and TFLite have no measurement here yet: the ideal liveness peak and one copy of the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .estimate import MB, WeightBytes
from .liveness import Graph, analyse, offset_plan, reuse_sets


@dataclass(frozen=True)
class RuntimeModel:
    backend: str
    allocator: str  # "liveness" | "offset" | "sets"
    repacks_matmul: bool  # a second copy of the MatMul weights, in the runtime's own layout
    output_copy: bool  # the Python binding copies the outputs out of the runtime's buffers
    overhead: int  # code + JIT kernels paged in by the first load and run (bytes)
    measured: bool  # calibrated against this machine's measurements (docs/plan.md)
    note: str

    def activations(self, graph: Graph) -> int:
        if self.allocator == "sets":
            peak = reuse_sets(graph)
        elif self.allocator == "offset":
            peak = offset_plan(graph)
        else:
            peak = analyse(graph).peak_bytes
        outputs = sum(graph.sizes.get(o, 0) for o in graph.outputs) if self.output_copy else 0
        return peak + outputs

    def runtime_copies(self, weights: WeightBytes) -> int:
        return weights.matmul if self.repacks_matmul else 0

    def to_dict(self) -> dict:
        return asdict(self)


RUNTIME_MODELS = {
    "openvino": RuntimeModel("openvino", "sets", True, True, 32 * MB, True,
                             "model.bin memory-mapped + MatMul weights repacked; dynamic-shape activations share "
                             "memory per set of non-overlapping tensors"),
    "onnxruntime": RuntimeModel("onnxruntime", "offset", False, False, 8 * MB, True,
                                "initializers copied into ORT buffers; activations placed by the memory-pattern "
                                "planner"),
    "tensorrt": RuntimeModel("tensorrt", "liveness", False, False, 0, False,
                             "not measured: ideal liveness and one copy of the weights (TensorRT plans its own "
                             "activation memory at build time)"),
    "tflite": RuntimeModel("tflite", "liveness", False, False, 0, False,
                           "not measured: ideal liveness and one copy of the weights (the TFLite arena planner)"),
}


def runtime_model(backend: str) -> RuntimeModel:
    return RUNTIME_MODELS.get(backend, RUNTIME_MODELS["tensorrt"])
