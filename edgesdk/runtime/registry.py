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

Bundle = Any  # edgesdk.runtime.manifest.Bundle, which looks runtimes up here (no import back)


class Session(Protocol):
    """What a runtime module's `open_session(bundle, threads)` returns."""

    def infer(self, feeds: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeBackend:
    name: str
    open_session: Callable[[Bundle, int | None], Session]
    settings: type  # a frozen dataclass: this backend's manifest target.settings
    install: str  # what the device runs to get this runtime, e.g. "pip install 'edgesdk[onnxruntime]'"
    label: str = ""  # what runs the bundle, for tables: "ONNX Runtime CPU"
    describe: Callable[[Bundle], list[tuple[str, str]]] = lambda bundle: []  # (label, text) lines for inspect
    warm_up: Callable[[Any], None] = lambda settings: None  # import the runtime + device plugin, no model
    caches: tuple[str, ...] = ()  # bundle sub-folders the runtime may create (e.g. TensorRT engines/)
    # the static sequence lengths an artefact is compiled for (() = any length): export verifies each one
    static_lengths: Callable[[Any], tuple[int, ...]] = lambda settings: ()
    # the static [batch >= 2, length] shapes it also has (batched signatures): golden I/O records each one
    static_batches: Callable[[Any], tuple[tuple[int, int], ...]] = lambda settings: ()


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

    return discover(__package__, package_path, "RUNTIME", RuntimeBackend)


def _load(name: str) -> RuntimeBackend | None:
    return described(__package__, name, "RUNTIME", RuntimeBackend)


def discover(package: str, path, attribute: str, kind: type) -> dict[str, Any]:
    """Every module of `package` whose `attribute` is a `kind` named like the module: the registries' one rule."""
    found = {}
    for info in pkgutil.iter_modules(path):
        item = described(package, info.name, attribute, kind)
        if item is not None:
            found[item.name] = item
    return found


def described(package: str, name: str, attribute: str, kind: type) -> Any:
    """`package.name`'s `attribute` if it is a `kind` whose name is the module's; None if there is no such module."""
    try:
        module = importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{package}.{name}":
            return None
        raise
    item = getattr(module, attribute, None)
    return item if isinstance(item, kind) and item.name == name else None


@dataclass(frozen=True)
class NoSettings:
    """For backends whose bundles carry no target settings."""
