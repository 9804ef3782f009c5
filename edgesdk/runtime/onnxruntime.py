"""ONNX Runtime session (CPU execution provider) for bundles whose artefact is an ONNX file."""

from __future__ import annotations

import numpy as np

from ..errors import BundleError, MissingDependencyError
from .manifest import Bundle


class ORTSession:
    def __init__(self, bundle: Bundle, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("this bundle needs ONNX Runtime: pip install 'edgesdk[onnxruntime]' "
                                         "(or pip install onnxruntime).") from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Spinning threads double latency on a shared CPU and steal cycles from the app embedding us.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = bundle.manifest["target"].get("providers") or ["CPUExecutionProvider"]
        available = set(ort.get_available_providers())
        providers = [p for p in providers if (p[0] if isinstance(p, tuple) else p) in available]
        providers = providers or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(bundle.artefact), options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {bundle.artefact}: {exc}") from exc
        self._output_names = [o.name for o in self._session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))

    def close(self) -> None:
        self._session = None


def open_session(bundle: Bundle, threads: int | None) -> ORTSession:
    return ORTSession(bundle, threads)
