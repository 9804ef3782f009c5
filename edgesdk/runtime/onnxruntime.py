"""ONNX Runtime session (CPU execution provider) for bundles whose artefact is an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BundleError, MissingDependencyError
from .manifest import Bundle
from .registry import RuntimeBackend
from .schema import check

INSTALL = "pip install 'edgesdk[onnxruntime]' (or pip install onnxruntime)"


@dataclass(frozen=True)
class ORTSettings:
    providers: tuple[str, ...] = field(default=("CPUExecutionProvider",), metadata=check(
        pattern=r"[A-Za-z]+ExecutionProvider", nonempty=True))
    # ORT graph optimizers to switch off: CommonSubexpressionElimination would merge the dedicated Q/DQ pairs of
    # an INT8 QDQ model back into shared ones, which ORT then cannot fuse into integer MatMuls
    disabled_optimizers: tuple[str, ...] = field(default=(), metadata=check(pattern=r"[A-Za-z][A-Za-z0-9]*"))


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(f"this bundle needs ONNX Runtime: {INSTALL}.") from exc
    return ort


def session_options(ort, threads: int | None):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    # Spinning threads double latency on a shared CPU and steal cycles from the app embedding us.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class ORTSession:
    def __init__(self, bundle: Bundle, threads: int | None, providers: list | None = None,
                 disabled_optimizers: tuple[str, ...] = ()):
        ort = import_ort()
        options = session_options(ort, threads)
        available = set(ort.get_available_providers())
        wanted = providers if providers is not None else list(bundle.settings.providers)
        chosen = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(bundle.artefact), options, providers=chosen,
                                                 disabled_optimizers=list(disabled_optimizers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {bundle.artefact}: {exc}") from exc
        self._output_names = [o.name for o in self._session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))

    def close(self) -> None:
        self._session = None


def open_session(bundle: Bundle, threads: int | None) -> ORTSession:
    return ORTSession(bundle, threads, disabled_optimizers=bundle.settings.disabled_optimizers)


def _describe(bundle: Bundle) -> list[tuple[str, str]]:
    lines = [("providers", ", ".join(bundle.settings.providers))]
    if bundle.settings.disabled_optimizers:
        lines.append(("ort graph", f"optimizers off: {', '.join(bundle.settings.disabled_optimizers)}"))
    return lines


RUNTIME = RuntimeBackend(name="onnxruntime", label="ONNX Runtime CPU",
                         open_session=open_session, settings=ORTSettings, install=INSTALL,
                         describe=_describe, warm_up=lambda settings: import_ort().get_available_providers())
