"""OpenVINO session for bundles whose artefact is an OpenVINO IR (model.xml + model.bin)."""

from __future__ import annotations

import threading

import numpy as np

from ..errors import BundleError, MissingDependencyError
from .manifest import Bundle


class OpenVINOSession:
    def __init__(self, bundle: Bundle, threads: int | None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise MissingDependencyError("this bundle needs OpenVINO: pip install 'edgesdk[openvino]' "
                                         "(or pip install openvino).") from exc
        config = {"INFERENCE_PRECISION_HINT": bundle.manifest["target"].get("inference_precision", "f32"),
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        device = bundle.manifest["target"].get("device", "CPU")
        core = ov.Core()
        try:
            self._compiled = core.compile_model(str(bundle.artefact), device, config)
        except RuntimeError as exc:
            raise BundleError(f"OpenVINO cannot compile {bundle.artefact} on {device}: {exc}") from exc
        self._output_names = [o.get_any_name() for o in self._compiled.outputs]
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer(feeds, share_inputs=False, share_outputs=False)
        return {name: np.asarray(result[output]) for name, output in zip(self._output_names, self._compiled.outputs)}

    def close(self) -> None:
        self._compiled = None


def open_session(bundle: Bundle, threads: int | None) -> OpenVINOSession:
    return OpenVINOSession(bundle, threads)
