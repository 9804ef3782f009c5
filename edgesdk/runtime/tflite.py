"""LiteRT / TFLite session for Android bundles (model.tflite: one static [1, L] int32 signature 'seq_L' per bucket).

Imports only numpy and the LiteRT interpreter (ai_edge_litert, else tflite_runtime). infer() takes [batch, S]
feeds, picks the smallest bucket L >= S, pads the sequence to L (mask 0, so the real tokens' outputs are the
same), runs the rows one by one (each signature is batch 1) and cuts per-token outputs back to S. One interpreter per thread (a TFLite
interpreter is not thread-safe). Delegates come from the manifest's preference (target.delegates, e.g.
["nnapi", "gpu", "xnnpack"]) or EDGESDK_TFLITE_DELEGATES (comma list; "name=/path/lib.so" names a library);
each is loaded by name when this platform has it, else logged and skipped; XNNPACK (the interpreter's default
CPU delegate) is the last resort. A .tflite the interpreter cannot read is refused at load with a BundleError.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendNotAvailableError, BundleError, MissingDependencyError
from .manifest import Bundle
from .registry import RuntimeBackend
from .schema import JSON, check

log = logging.getLogger("edgesdk")

# Shared-library names tried for each delegate (Android builds, then the desktop builds of the same delegates).
DELEGATE_LIBRARIES = {
    "gpu": ("libLiteRtGpuAccelerator.so", "libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so"),
    "nnapi": ("libtensorflowlite_nnapi_delegate.so", "libnnapi_delegate.so"),
    "hexagon": ("libhexagon_delegate.so", "libhexagon_interface.so"),
}
CPU_DELEGATES = ("xnnpack", "cpu")
INSTALL = "pip install 'edgesdk[tflite]' (or ai-edge-litert / tflite-runtime)"


@dataclass(frozen=True)
class TFLiteSettings:
    buckets: tuple[int, ...] = field(metadata=check(min=1, max=1 << 20))  # text: signature seq_L per L
    per_token_output: bool = True  # outputs [1, L, H] (cut back to the batch's length) or [1, C]
    delegates: tuple[str, ...] = field(default=("xnnpack",), metadata=check(
        choices=(*DELEGATE_LIBRARIES, *CPU_DELEGATES)))
    op_check: JSON | None = None  # what NNAPI / the GPU delegate take of the ops (display only)
    signature: str | None = field(default=None, metadata=check(nonempty=True))  # image/tensor: one static signature

    def __post_init__(self):
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"'buckets' must be increasing without repeats, got {list(self.buckets)}")
        if bool(self.buckets) == bool(self.signature):
            raise ValueError("a tflite bundle has either sequence 'buckets' (text) or one 'signature' (image, tensor)")


def interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as exc:
            raise MissingDependencyError(f"this bundle needs the LiteRT interpreter: {INSTALL}.") from exc
    return interpreter


def load_delegate(name: str, library: str | None = None):
    """A TFLite delegate by name ('gpu', 'nnapi', 'hexagon') or by library path; BackendNotAvailableError if absent."""
    module = interpreter_module()
    candidates = (library,) if library else DELEGATE_LIBRARIES.get(name, ())
    if not candidates:
        raise BackendNotAvailableError(f"unknown TFLite delegate '{name}'; known: "
                                       f"{', '.join([*DELEGATE_LIBRARIES, *CPU_DELEGATES])}.")
    errors = []
    for lib in candidates:
        try:
            ctypes.CDLL(lib)  # probe first: LiteRT's load_delegate leaves a half-built Delegate that warns on GC
            return module.load_delegate(lib)
        except (ValueError, OSError, RuntimeError) as exc:
            errors.append(f"{lib}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise BackendNotAvailableError(
        f"the TFLite '{name}' delegate is not available on this machine (tried {'; '.join(errors)}). "
        "On Android it ships with the LiteRT AAR / benchmark_model; elsewhere run on XNNPACK (CPU) with "
        "EDGESDK_TFLITE_DELEGATES=xnnpack, or name the library: EDGESDK_TFLITE_DELEGATES=gpu=/path/lib.so.")


def _preference(bundle: Bundle) -> list[tuple[str, str | None]]:
    raw = os.environ.get("EDGESDK_TFLITE_DELEGATES")
    names = raw.split(",") if raw else list(bundle.settings.delegates) or ["xnnpack"]
    return [(n.split("=", 1)[0].strip(), n.split("=", 1)[1].strip() if "=" in n else None) for n in names if n.strip()]


class TFLiteSession:
    def __init__(self, bundle: Bundle, threads: int | None):
        self._module = interpreter_module()
        self._model = bundle.artefact.read_bytes()
        self._path = bundle.artefact
        self._threads = threads
        self._buckets: tuple[int, ...] = bundle.settings.buckets
        self._per_token = bundle.settings.per_token_output
        self._signature = bundle.settings.signature
        self._output_names = [o.name for o in bundle.manifest.outputs]
        self._choice, self.delegate = self._choose_delegate(bundle)
        self._local = threading.local()
        self._interpreter()  # load now: a damaged file fails here, not at the first inference

    def _choose_delegate(self, bundle: Bundle) -> tuple[tuple[str, str | None] | None, str]:
        for name, library in _preference(bundle):
            if name in CPU_DELEGATES:
                break
            try:
                load_delegate(name, library)  # probe once; each thread's interpreter gets its own instance
            except BackendNotAvailableError as exc:
                log.info("TFLite bundle: %s", exc)
                continue
            log.info("TFLite bundle: running on the %s delegate", name)
            return (name, library), name
        log.info("TFLite bundle: running on XNNPACK (CPU)")
        return None, "xnnpack"

    def _interpreter(self):
        local = getattr(self._local, "interpreter", None)
        if local is not None:
            return local
        delegates = [load_delegate(*self._choice)] if self._choice else None  # a delegate serves one interpreter
        try:
            interpreter = self._module.Interpreter(model_content=self._model, num_threads=self._threads,
                                                   experimental_delegates=delegates)
            runners = {b: interpreter.get_signature_runner(f"seq_{b}") for b in self._buckets}
            if self._signature:
                runners = {None: interpreter.get_signature_runner(self._signature)}
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"LiteRT cannot load {self._path}: {str(exc).strip()[:300]}. The .tflite is damaged, "
                              "not a TFLite model or lacks a bucket's signature; re-export the bundle.") from exc
        self._local.runners = runners
        self._local.interpreter = interpreter
        return interpreter

    def bucket_for(self, length: int) -> int:
        """The smallest bucket that holds `length` tokens (the Runner caps lengths at the largest)."""
        return next((b for b in self._buckets if b >= length), self._buckets[-1])

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._interpreter()
        if self._signature:  # one static [1, ...] signature: the batch runs row by row
            runner = self._local.runners[None]
            inputs, details = runner.get_input_details(), runner.get_output_details()
            rows = len(next(iter(feeds.values())))
            parts = [runner(**{n: np.ascontiguousarray(feeds[n][r:r + 1], dtype=inputs[n]["dtype"]) for n in inputs})
                     for r in range(rows)]
            return {name: np.concatenate([_dequantize(p[key], detail) for p in parts])
                    for name, (key, detail) in zip(self._output_names, details.items())}
        length = next(iter(feeds.values())).shape[1]
        bucket = self.bucket_for(length)
        runner = self._local.runners[bucket]
        inputs = runner.get_input_details()
        details = runner.get_output_details()
        rows = len(next(iter(feeds.values())))
        padded = {name: np.pad(np.asarray(feeds[name])[:, :bucket], ((0, 0), (0, max(0, bucket - length))))
                  for name in inputs}
        results: list[list[np.ndarray]] = [[] for _ in details]
        for r in range(rows):
            out = runner(**{name: np.ascontiguousarray(padded[name][r:r + 1], dtype=inputs[name]["dtype"])
                            for name in inputs})
            for i, (key, detail) in enumerate(details.items()):
                value = _dequantize(out[key], detail)
                results[i].append(value[:, :length] if self._per_token and value.ndim == 3 else value)
        return {name: np.concatenate(parts) for name, parts in zip(self._output_names, results)}

    def close(self) -> None:
        self._local = threading.local()


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    if value.dtype == np.float32:
        return value
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        return value.astype(np.float32)
    return (value.astype(np.float32) - zero) * scale


def open_session(bundle: Bundle, threads: int | None) -> TFLiteSession:
    return TFLiteSession(bundle, threads)


def _describe(bundle: Bundle) -> list[tuple[str, str]]:
    s: TFLiteSettings = bundle.settings
    lines = [("tflite", f"signatures {', '.join(f'seq_{b} [1, {b}]' for b in s.buckets)}; delegates "
                        f"{', '.join(s.delegates)}")]
    if isinstance(s.op_check, dict):
        lines.append(("op check", str(s.op_check.get("verdict", ""))))
        lines += [("", str(line)) for line in s.op_check.get("details", []) or []]
    return lines


RUNTIME = RuntimeBackend(name="tflite", label="LiteRT CPU (XNNPACK) or a delegate",
                         open_session=open_session, settings=TFLiteSettings, install=INSTALL,
                         describe=_describe, warm_up=lambda settings: interpreter_module(),
                         static_lengths=lambda settings: settings.buckets)
