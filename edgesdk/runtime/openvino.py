"""OpenVINO session for bundles whose artefact is an OpenVINO IR (model.xml + model.bin)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import BundleError, MissingDependencyError
from .manifest import Bundle
from .registry import RuntimeBackend
from .schema import check

INSTALL = "pip install 'edgesdk[openvino]' (or pip install openvino)"


@dataclass(frozen=True)
class OpenVINOSettings:
    device: str = field(default="CPU", metadata=check(pattern=r"[A-Z][A-Z0-9_.:,()-]*"))
    inference_precision: str = field(default="f32", metadata=check(choices=("f32", "f16", "bf16")))


def import_openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError(f"this bundle needs OpenVINO: {INSTALL}.") from exc
    return ov


class OpenVINOSession:
    def __init__(self, bundle: Bundle, threads: int | None):
        ov = import_openvino()
        settings: OpenVINOSettings = bundle.settings
        config = {"INFERENCE_PRECISION_HINT": settings.inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = ov.Core().compile_model(str(bundle.artefact), settings.device, config)
        except RuntimeError as exc:
            raise BundleError(f"OpenVINO cannot compile {bundle.artefact} on {settings.device}: {exc}") from exc
        self._output_names = [o.get_any_name() for o in self._compiled.outputs]
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer(feeds, share_inputs=False, share_outputs=False)
        return {name: np.asarray(result[output]) for name, output in zip(self._output_names, self._compiled.outputs)}

    def memory_report(self) -> dict:
        """What OpenVINO itself reports about memory: the CPU plugin has none (GPU_MEMORY_STATISTICS is GPU-only)."""
        supported = [str(p) for p in self._compiled.get_property("SUPPORTED_PROPERTIES")]
        found = {p: str(self._compiled.get_property(p)) for p in supported if "MEMORY" in p.upper()}
        return found or {"note": "the OpenVINO CPU plugin reports no memory statistics (GPU_MEMORY_STATISTICS is "
                                 "GPU-only)"}

    def close(self) -> None:
        self._compiled = None


def open_session(bundle: Bundle, threads: int | None) -> OpenVINOSession:
    return OpenVINOSession(bundle, threads)


def _describe(bundle: Bundle) -> list[tuple[str, str]]:
    return [("openvino", f"device {bundle.settings.device}, INFERENCE_PRECISION_HINT="
                         f"{bundle.settings.inference_precision}")]


def _warm_up(settings: OpenVINOSettings) -> None:
    import_openvino().Core().get_property(settings.device, "FULL_DEVICE_NAME")


RUNTIME = RuntimeBackend(name="openvino", label="OpenVINO CPU",
                         open_session=open_session, settings=OpenVINOSettings, install=INSTALL,
                         describe=_describe, warm_up=_warm_up)
