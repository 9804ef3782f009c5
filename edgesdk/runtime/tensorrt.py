"""Runner session for TensorRT bundles (model.onnx with explicit Q/DQ + build settings).

Order of preference, each step logged: a native TensorRT engine (tensorrt + cuda-python) when the bundle's
engines/<TensorRT version>_<GPU>/model.plan exists; else ONNX Runtime with the TensorRT execution provider (engine
cache on, in the same engines/ folder), falling back to the CUDA provider, then to the CPU provider. On a machine
without an NVIDIA GPU the CPU provider runs the same Q/DQ ONNX — that is how edgesdk measures fidelity at export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import MissingDependencyError
from .manifest import RELPATH, Bundle
from .onnxruntime import ORTSession
from .registry import RuntimeBackend
from .schema import JSON, check

log = logging.getLogger("edgesdk")
INSTALL = "onnxruntime-gpu (TensorRT/CUDA providers) or tensorrt + cuda-python (JetPack ships them)"


@dataclass(frozen=True)
class TRTShapes:
    min: dict[str, tuple[int, ...]]
    opt: dict[str, tuple[int, ...]]
    max: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class TRTBuild:
    """How the engine is built on the device: the same settings as build_engine.sh (trtexec)."""

    version: str
    precision_flags: tuple[str, ...] = field(metadata=check(choices=("--int8", "--fp16")))
    shapes: TRTShapes
    workspace_mb: int = field(default=0, metadata=check(min=0, max=1 << 20))
    dla_core: int = field(default=-1, metadata=check(min=-1, max=16))
    gpu_fallback: bool = True
    timing_cache: str = field(default="engines/timing.cache", metadata=check(pattern=RELPATH))
    engine_dir: str = field(default="engines", metadata=check(pattern=RELPATH))
    plan: str = field(default="model.plan", metadata=check(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]*"))


@dataclass(frozen=True)
class TensorRTSettings:
    tensorrt: TRTBuild
    device: str = "GPU"
    tensorrt_compatibility: JSON = field(default_factory=list)  # findings of the static check (display only)


def engine_key(trt_version: str, gpu_name: str) -> str:
    raw = f"TensorRTv{trt_version}_{gpu_name}"
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in raw)


def providers_for(bundle: Bundle, available: set[str]) -> list:
    settings = bundle.settings.tensorrt
    cache = str(bundle.path / settings.engine_dir)
    wanted = [("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                             "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                                             "trt_fp16_enable": "--fp16" in settings.precision_flags,
                                             "trt_int8_enable": "--int8" in settings.precision_flags,
                                             "trt_max_workspace_size": max(settings.workspace_mb, 1) << 20}),
              ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    chosen = [p for p in wanted if p[0] in available]
    missing = [name for name, _ in wanted[:2] if name not in available]
    if missing:
        log.info("TensorRT bundle: %s not available here; running on %s", ", ".join(missing), chosen[0][0])
    return chosen


class TensorRTOnnxSession(ORTSession):
    """ONNX Runtime with TRT → CUDA → CPU providers."""

    def __init__(self, bundle: Bundle, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("this bundle needs onnxruntime-gpu (TensorRT/CUDA providers) or, on CPU, "
                                         "onnxruntime: pip install onnxruntime-gpu") from exc
        super().__init__(bundle, threads, providers=providers_for(bundle, set(ort.get_available_providers())))


class NativeTensorRTSession:
    """A deserialized TensorRT engine run through TensorRT 10's tensor-address API with cuda-python buffers."""

    def __init__(self, plan_path, bundle: Bundle):
        import tensorrt as trt
        from cuda import cudart

        self._trt, self._cudart = trt, cudart
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
        self._context = self._engine.create_execution_context()
        self._outputs = [o.name for o in bundle.manifest.outputs]
        _, self._stream = cudart.cudaStreamCreate()

    def _alloc(self, nbytes: int) -> int:
        err, ptr = self._cudart.cudaMalloc(max(nbytes, 1))
        if int(err) != 0:
            raise RuntimeError(f"cudaMalloc({nbytes}) failed: {err}")
        return ptr

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, kind = self._cudart, self._cudart.cudaMemcpyKind
        buffers = []
        try:
            for name, array in feeds.items():
                array = np.ascontiguousarray(array)
                self._context.set_input_shape(name, array.shape)
                ptr = self._alloc(array.nbytes)
                buffers.append(ptr)
                cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind.cudaMemcpyHostToDevice, self._stream)
                self._context.set_tensor_address(name, ptr)
            results = {}
            for name in self._outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                host = np.empty(shape, dtype=self._trt.nptype(self._engine.get_tensor_dtype(name)))
                ptr = self._alloc(host.nbytes)
                buffers.append(ptr)
                self._context.set_tensor_address(name, ptr)
                results[name] = (host, ptr)
            self._context.execute_async_v3(self._stream)
            for host, ptr in results.values():
                cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind.cudaMemcpyDeviceToHost, self._stream)
            cudart.cudaStreamSynchronize(self._stream)
            return {name: host for name, (host, _) in results.items()}
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)

    def close(self) -> None:
        self._context = None
        self._engine = None


def find_plan(bundle: Bundle):
    """The cached engine for this machine's TensorRT and GPU, or None."""
    try:
        import tensorrt as trt
        from cuda import cudart
    except ImportError:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    settings = bundle.settings.tensorrt
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    plan = bundle.path / settings.engine_dir / engine_key(trt.__version__, name) / settings.plan
    return plan if plan.is_file() else None


def open_session(bundle: Bundle, threads: int | None):
    plan = find_plan(bundle)
    if plan is not None:
        log.info("TensorRT bundle: running the native engine %s", plan)
        return NativeTensorRTSession(plan, bundle)
    return TensorRTOnnxSession(bundle, threads)


def _describe(bundle: Bundle) -> list[tuple[str, str]]:
    t = bundle.settings.tensorrt
    findings = bundle.settings.tensorrt_compatibility
    shapes = {k: {n: list(d) for n, d in getattr(t.shapes, k).items()} for k in ("min", "opt", "max")}
    return [("tensorrt", f"{t.version} flags {' '.join(t.precision_flags) or '(fp32)'} workspace {t.workspace_mb} MB "
                         f"dla_core {t.dla_core} shapes min {shapes['min']} opt {shapes['opt']} max {shapes['max']}"),
            ("trt check", "OK: nothing TensorRT 10 would refuse" if not findings else
             "; ".join(f"{f.get('kind')} {f.get('where')}: {f.get('detail')}" for f in findings
                       if isinstance(f, dict)))]


def _warm_up(settings) -> None:
    import onnxruntime as ort

    ort.get_available_providers()


RUNTIME = RuntimeBackend(name="tensorrt", label="TensorRT, else ONNX Runtime TensorRT/CUDA/CPU EP",
                         open_session=open_session, settings=TensorRTSettings, install=INSTALL,
                         describe=_describe, warm_up=_warm_up, caches=("engines",))
