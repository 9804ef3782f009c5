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
Each backend module (edgesdk/backends/<x>.py) carries its own RuntimeModel as `BACKEND.memory`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .liveness import Graph, analyse, offset_plan, reuse_sets

MB = 2**20


@dataclass(frozen=True)
class WeightBytes:
    embeddings: int = 0
    matmul: int = 0
    quant_params: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.embeddings + self.matmul + self.quant_params + self.other

    def to_dict(self) -> dict[str, int]:
        return {"embeddings": self.embeddings, "matmul": self.matmul, "quant_params": self.quant_params,
                "other": self.other, "total": self.total}




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
    int4: tuple[bool, str] = (False, "not supported")  # weight-only int4: supported?, how / why not
    int8_activation_bytes: int = 4  # CPU runtimes keep tensors between integer kernels in fp32
    full_integer_activation_bytes: int = 4  # a full-integer model (NPU/NNAPI) keeps int8 everywhere: 1
    fp16_weights_as_f32_on: tuple[str, ...] = ()  # devices that decompress fp16 weights to f32 at compile

    def activation_itemsize(self, precision: str, full_integer: bool, device: str) -> int | None:
        """Bytes per float activation element at run time (see estimate.py); None = the model's own."""
        if precision == "as-is":
            return None
        if precision == "fp32":
            return 4
        if precision == "fp16":
            return 4 if device.upper() in self.fp16_weights_as_f32_on else 2
        return self.full_integer_activation_bytes if full_integer else self.int8_activation_bytes

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
