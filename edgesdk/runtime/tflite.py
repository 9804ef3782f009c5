"""LiteRT / TFLite session for Android bundles (model.tflite: a static [1, L] int32 signature 'seq_L' per bucket L,
and a static [B, L] signature 'bB_seq_L' per batched shape of target.settings.batches).

Imports only numpy and the LiteRT interpreter (ai_edge_litert, else tflite_runtime). infer() takes [rows, S]
feeds and sends each row to the smallest bucket L that holds its own tokens (the length input's mask, e.g.
attention_mask: a batch padded to its longest text does not make its short rows pay for that length; feeds padded
to exactly a bucket's length run all in that bucket, which is how export measures each length), pads the
sequence to L (mask 0, so the real tokens' outputs are the same), runs each bucket's rows in its signatures
(`row_plan`: the biggest batch the rows fill, the tail in the smallest that holds it once at least half full,
padded with empty rows, else smaller ones down to batch 1) and gives per-token outputs back at S (zeros past a
row's bucket, where its mask is 0). One interpreter per thread (a TFLite interpreter is not thread-safe).
Delegates come from the manifest's preference (target.delegates, e.g. ["nnapi", "gpu", "xnnpack"]) or
EDGESDK_TFLITE_DELEGATES (comma list; "name=/path/lib.so" names a library);
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


def signature_name(batch: int, length: int) -> str:
    """The signature of static shape [batch, length]: 'seq_L' at batch 1 (every bundle has one per bucket)."""
    return f"seq_{length}" if batch == 1 else f"b{batch}_seq_{length}"


def row_plan(rows: int, sizes: tuple[int, ...]) -> list[int]:
    """The batch sizes (from `sizes`, which hold 1) that run `rows` rows: the biggest the rows fill, repeatedly;
    the tail goes into the smallest size that holds it when it fills at least half of it (an empty row costs what
    a real one does, and a batched signature costs less per row), else into smaller sizes."""
    plan, sizes = [], sorted(set(sizes), reverse=True)
    while rows > 0:
        holds = min((b for b in sizes if b >= rows), default=None)
        if holds is not None and 2 * rows >= holds:
            return plan + [holds]
        fill = next(b for b in sizes if b <= rows)
        plan.append(fill)
        rows -= fill
    return plan


@dataclass(frozen=True)
class TFLiteSettings:
    buckets: tuple[int, ...] = field(metadata=check(min=1, max=1 << 20))  # text: signature seq_L per L
    # batched signatures bB_seq_L as [B, L] pairs (L one of the buckets); () = batch 1 only (bundles before them)
    batches: tuple[tuple[int, int], ...] = ()
    per_token_output: bool = True  # outputs [1, L, H] (cut back to the batch's length) or [1, C]
    length_input: str | None = None  # the 0/1 mask input that gives each row's length (None: every row is S long)
    delegates: tuple[str, ...] = field(default=("xnnpack",), metadata=check(
        choices=(*DELEGATE_LIBRARIES, *CPU_DELEGATES)))
    op_check: JSON | None = None  # what NNAPI / the GPU delegate take of the ops (display only)
    signature: str | None = field(default=None, metadata=check(nonempty=True))  # image/tensor: one static signature

    def __post_init__(self):
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"'buckets' must be increasing without repeats, got {list(self.buckets)}")
        if bool(self.buckets) == bool(self.signature):
            raise ValueError("a tflite bundle has either sequence 'buckets' (text) or one 'signature' (image, tensor)")
        bad = [list(s) for s in self.batches if s[0] < 2 or s[1] not in self.buckets]
        if bad or len(set(self.batches)) != len(self.batches):
            raise ValueError(f"'batches' must be distinct [batch >= 2, length among the buckets {list(self.buckets)}] "
                             f"pairs, got {[list(s) for s in self.batches]}")

    def sizes(self, length: int) -> tuple[int, ...]:
        """The batch sizes with a signature at bucket `length` (1 always)."""
        return (1, *sorted(b for b, n in self.batches if n == length))


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
        self._settings: TFLiteSettings = bundle.settings
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
            runners = {(b, n): interpreter.get_signature_runner(signature_name(b, n))
                       for n in self._buckets for b in self._settings.sizes(n)}
            if self._signature:
                runners = {None: interpreter.get_signature_runner(self._signature)}
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"LiteRT cannot load {self._path}: {str(exc).strip()[:300]}. The .tflite is damaged, "
                              "not a TFLite model or lacks a bucket's signature; re-export the bundle.") from exc
        self._local.runners = runners
        self._local.details = {k: (r.get_input_details(), r.get_output_details()) for k, r in runners.items()}
        self._local.interpreter = interpreter
        return interpreter

    def bucket_for(self, length: int) -> int:
        """The smallest bucket that holds `length` tokens (the Runner caps lengths at the largest)."""
        return next((b for b in self._buckets if b >= length), self._buckets[-1])

    def row_buckets(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Each row's bucket: the smallest that holds its tokens (its last mask 1), at most the batch's; every row
        in the feeds' own length when that is a bucket (the caller padded to it on purpose: export's per-length
        fidelity and golden I/O, a benchmark of one signature)."""
        rows, length = next(iter(feeds.values())).shape[:2]
        mask = feeds.get(self._settings.length_input) if self._settings.length_input else None
        if mask is None or length in self._buckets:
            return np.full(rows, self.bucket_for(length))
        nonzero = np.asarray(mask) != 0
        tokens = np.where(nonzero.any(1), length - np.argmax(nonzero[:, ::-1], axis=1), 1)
        return np.array([self.bucket_for(int(n)) for n in tokens])

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._interpreter()
        if self._signature:  # one static [1, ...] signature: the batch runs row by row
            runner = self._local.runners[None]
            inputs, details = self._local.details[None]
            rows = len(next(iter(feeds.values())))
            parts = [runner(**{n: _quantize(feeds[n][r:r + 1], inputs[n]) for n in inputs}) for r in range(rows)]
            return {name: np.concatenate([_dequantize(p[key], detail) for p in parts])
                    for name, (key, detail) in zip(self._output_names, details.items())}
        rows, length = next(iter(feeds.values())).shape[:2]
        buckets = self.row_buckets(feeds)
        results: list[np.ndarray | None] = [None] * len(self._output_names)
        for bucket in np.unique(buckets):
            chosen = np.flatnonzero(buckets == bucket)
            start = 0
            for batch in row_plan(len(chosen), self._settings.sizes(int(bucket))):
                runner = self._local.runners[(batch, int(bucket))]
                inputs, details = self._local.details[(batch, int(bucket))]
                part = chosen[start:start + batch]  # a tail's empty rows (ids 0, mask 0) are cut off again
                out = runner(**{name: _padded(feeds[name], part, batch, int(bucket), inputs[name]["dtype"])
                                for name in inputs})
                for i, (key, detail) in enumerate(details.items()):
                    value = _dequantize(out[key], detail)[:len(part)]
                    if results[i] is None:
                        shape = (rows, length, *value.shape[2:]) if self._per_token and value.ndim == 3 else \
                            (rows, *value.shape[1:])
                        results[i] = np.zeros(shape, dtype=np.float32)
                    if self._per_token and value.ndim == 3:
                        results[i][part, :min(length, value.shape[1])] = value[:, :length]
                    else:
                        results[i][part] = value
                start += batch
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self._local = threading.local()


def _padded(feed: np.ndarray, rows: np.ndarray, batch: int, bucket: int, dtype) -> np.ndarray:
    """Those rows of a [rows, S] feed as a [batch, bucket] array: zeros after the tokens and after the rows."""
    out = np.zeros((batch, bucket), dtype=dtype)
    part = np.asarray(feed)[rows, :bucket]
    out[:len(rows), :part.shape[1]] = part
    return out


def _quantize(value: np.ndarray, detail: dict) -> np.ndarray:
    """A float feed for an input the full-integer model takes as int8/uint8: x / scale + zero point, rounded and
    clipped (what the TFLite converter's float I/O would do); any other feed cast to the input's dtype."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and np.issubdtype(np.asarray(value).dtype, np.floating) and scale:
        info = np.iinfo(dtype)
        return np.ascontiguousarray(np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype))
    return np.ascontiguousarray(value, dtype=dtype)


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
    shapes = sorted((b, n) for n in s.buckets for b in s.sizes(n))
    lines = [("tflite", f"signatures {', '.join(f'{signature_name(b, n)} [{b}, {n}]' for b, n in shapes)}; "
                        f"delegates {', '.join(s.delegates)}")]
    if isinstance(s.op_check, dict):
        lines.append(("op check", str(s.op_check.get("verdict", ""))))
        lines += [("", str(line)) for line in s.op_check.get("details", []) or []]
    return lines


RUNTIME = RuntimeBackend(name="tflite", label="LiteRT CPU (XNNPACK) or a delegate",
                         open_session=open_session, settings=TFLiteSettings, install=INSTALL,
                         describe=_describe, warm_up=lambda settings: interpreter_module(),
                         static_lengths=lambda settings: settings.buckets,
                         static_batches=lambda settings: tuple((int(b), int(n)) for b, n in settings.batches))
