"""The on-device half of every backend, found by file name: `edgesdk/runtime/<backend>.py` defining `RUNTIME`.

A runtime module describes itself once with a `RuntimeBackend`: how to open a session, the typed settings its
bundles carry in `manifest.target.settings`, what the device must install, the lines `edgesdk inspect` shows, the
sub-folders the runtime may write caches into. Nothing here lists backends by hand: a new one is a new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import BackendNotAvailableError

if TYPE_CHECKING:
    import numpy as np

    from .manifest import Bundle


class Session(Protocol):
    """What a runtime module's `open_session(bundle, threads)` returns."""

    def infer(self, feeds: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeBackend:
    name: str
    open_session: Callable[["Bundle", int | None], Session]
    settings: type  # a frozen dataclass: this backend's manifest target.settings
    install: str  # what the device runs to get this runtime, e.g. "pip install 'edgesdk[onnxruntime]'"
    label: str = ""  # what runs the bundle, for tables: "ONNX Runtime CPU"
    describe: Callable[["Bundle"], list[tuple[str, str]]] = lambda bundle: []  # (label, text) lines for inspect
    warm_up: Callable[[Any], None] = lambda settings: None  # import the runtime + device plugin, no model
    caches: tuple[str, ...] = ()  # bundle sub-folders the runtime may create (e.g. TensorRT engines/)
    # the static sequence lengths an artefact is compiled for (() = any length): export verifies each one
    static_lengths: Callable[[Any], tuple[int, ...]] = lambda settings: ()


def runtime_backend(name: str) -> RuntimeBackend:
    """The runtime of backend `name` (the module edgesdk/runtime/<name>.py), or an error listing the known ones."""
    found = _load(name) if isinstance(name, str) and name.isidentifier() else None
    if found is None:
        raise BackendNotAvailableError(f"this edgesdk has no runner for backend '{name}'. "
                                       f"Runners available: {', '.join(sorted(runtime_backends()))}.")
    return found


def runtime_backends() -> dict[str, RuntimeBackend]:
    """Every runtime module in this package that defines RUNTIME, by backend name."""
    from . import __path__ as package_path

    found = {}
    for info in pkgutil.iter_modules(package_path):
        backend = _load(info.name)
        if backend is not None:
            found[backend.name] = backend
    return found


def _load(name: str) -> RuntimeBackend | None:
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.{name}":
            return None
        raise
    backend = getattr(module, "RUNTIME", None)
    return backend if isinstance(backend, RuntimeBackend) and backend.name == name else None


@dataclass(frozen=True)
class NoSettings:
    """For backends whose bundles carry no target settings."""
