"""Apache TVM session for bundles whose artefact is a compiled Relax library (`model.so` + `weights.npz`).

The library holds one function per sequence bucket (`seq32`, `seq64`, ...) at a fixed batch. A feed is padded up
to the smallest bucket that holds it (pad id 0, attention mask 0, so the real tokens' outputs do not change), run
row block by row block through that function, and its outputs are sliced back to the feed's own length. Only TVM's
runtime API is used (`tvm.runtime.load_module`, `tvm.cpu()`, the Relax VirtualMachine); the apache-tvm wheel still
imports its compiler with `import tvm`, so the device installs the whole wheel.

Threads: `threads` sets TVM_NUM_THREADS before TVM's pool starts and re-configures the calling thread's pool
(`runtime.config_threadpool`); TVM's pool is per calling thread, so each thread gets its own VM (a VM keeps its
frames between calls and is not re-entrant) and its own pool setting. A bundle cross-compiled for another machine
(aarch64 on an x86 host) runs its host twin library here when it has one, saying so.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import BundleError, InputError, MissingDependencyError
from .manifest import Bundle
from .registry import RuntimeBackend
from .schema import check

log = logging.getLogger("edgesdk")
INSTALL = "pip install 'edgesdk[tvm]' (or pip install apache-tvm==0.27.0.post1)"
PATH = r"[A-Za-z0-9_][A-Za-z0-9_./-]*"
MACHINES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class TVMSettings:
    library: str = field(metadata=check(pattern=PATH))  # the device library (an ELF shared object)
    machine: str = field(metadata=check(choices=MACHINES))  # what the library runs on
    target: str = field(metadata=check(nonempty=True))  # the TVM target it was compiled for (JSON)
    weights: str = field(metadata=check(pattern=PATH))  # npz: p0000, p0001, ... in the functions' parameter order
    entries: tuple[str, ...] = field(metadata=check(pattern=r"seq[0-9]+", nonempty=True))  # one per bucket
    buckets: tuple[int, ...] = field(metadata=check(min=1, max=8192, nonempty=True))  # sequence lengths, ascending
    batch: int = field(metadata=check(min=1, max=64))  # rows per call of an entry
    inputs: tuple[str, ...] = field(metadata=check(pattern=r"[A-Za-z0-9_.:/-]+", nonempty=True))  # token inputs
    tuned_trials: int = field(default=0, metadata=check(min=0))  # MetaSchedule trials behind it (0 = untuned)
    host_library: str = field(default="", metadata=check(pattern=r"|" + PATH))  # same module for the build host
    host_machine: str = field(default="", metadata=check(choices=("", *MACHINES)))
    host_target: str = ""

    def __post_init__(self):
        if len(self.entries) != len(self.buckets) or list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("needs one entry per bucket and buckets ascending and unique, got "
                             f"{list(self.entries)} / {list(self.buckets)}")
        if self.entries != tuple(f"seq{b}" for b in self.buckets):
            raise ValueError(f"entries {list(self.entries)} must be seq<bucket> for buckets {list(self.buckets)}")
        if bool(self.host_library) != bool(self.host_machine):
            raise ValueError("host_library and host_machine go together")


def import_tvm(threads: int | None = None):
    if threads and "tvm" not in sys.modules:
        os.environ["TVM_NUM_THREADS"] = str(int(threads))  # read when TVM's first thread pool starts
    try:
        import tvm
        from tvm.runtime.vm import VirtualMachine
    except ImportError as exc:
        raise MissingDependencyError(f"this bundle needs the TVM runtime: {INSTALL}.") from exc
    return tvm, VirtualMachine


def this_machine() -> str:
    name = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def library_for_here(bundle: Bundle) -> tuple[str, bool]:
    """(library path, is it the host twin) for this machine, or a BundleError saying what would run it."""
    s: TVMSettings = bundle.settings
    here = this_machine()
    if here == s.machine:
        return s.library, False
    if s.host_library and here == s.host_machine:
        return s.host_library, True
    raise BundleError(f"bundle '{bundle.path}': its TVM library is compiled for {s.machine} ({s.target}); this "
                      f"machine is {here}. Run it on a {s.machine} device, or export a TVM target for {here}.")


class TVMSession:
    def __init__(self, bundle: Bundle, threads: int | None):
        self._tvm, self._vm_type = import_tvm(threads)
        self._settings: TVMSettings = bundle.settings
        self._threads = threads
        path, twin = library_for_here(bundle)
        if twin:
            log.warning("%s: running the %s twin library (%s): the %s device library is not run on this machine",
                        bundle.path.name, self._settings.host_machine, path, self._settings.machine)
        self.library = path
        self._device = self._tvm.cpu()
        try:
            self._lib = self._tvm.runtime.load_module(str(bundle.file(path)))
            with np.load(bundle.file(self._settings.weights), allow_pickle=False) as data:
                keys = sorted(data.files)
                self._weights = [self._tvm.runtime.tensor(data[k], self._device) for k in keys]
        except Exception as exc:  # TVMError / OSError from the loader
            raise BundleError(f"TVM cannot load {bundle.file(path)}: {str(exc)[:300]}") from exc
        self._names = [o.name for o in bundle.manifest.outputs]
        self._local = threading.local()

    def _vm(self):
        vm = getattr(self._local, "vm", None)
        if vm is None:
            if self._threads:
                configure = self._tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
                if configure is not None:
                    configure(1, int(self._threads))  # this thread's pool: big cores first, `threads` workers
            vm = self._local.vm = self._vm_type(self._lib, self._device)
        return vm

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self._settings
        rows, seq = next(iter(feeds.values())).shape
        bucket = next((b for b in s.buckets if b >= seq), None)
        if bucket is None:
            raise InputError(f"feeds have sequence length {seq}; this TVM bundle's largest bucket is "
                             f"{s.buckets[-1]} tokens.")
        padded = {name: _pad(feeds[name], rows, bucket, s.batch) for name in s.inputs}
        function = self._vm()[f"seq{bucket}"]
        parts: list[list[np.ndarray]] = []
        for start in range(0, padded[s.inputs[0]].shape[0], s.batch):
            args = [self._tvm.runtime.tensor(padded[n][start:start + s.batch], self._device) for n in s.inputs]
            out = function(*args, *self._weights)
            parts.append([o.numpy() for o in _flatten(out)])
        outputs = [np.concatenate(column)[:rows] for column in zip(*parts)]
        return {name: _unpad(array, bucket, seq) for name, array in zip(self._names, outputs)}

    def close(self) -> None:
        self._lib = self._weights = None
        self._local = threading.local()


def _pad(array: np.ndarray, rows: int, bucket: int, batch: int) -> np.ndarray:
    total = -(-rows // batch) * batch
    out = np.zeros((total, bucket), dtype=array.dtype)  # pad id 0, mask 0, segment 0
    out[:rows, :array.shape[1]] = array
    return out


def _unpad(array: np.ndarray, bucket: int, seq: int) -> np.ndarray:
    return array[:, :seq] if array.ndim >= 2 and array.shape[1] == bucket and bucket != seq else array


def _flatten(out) -> list:
    return [out] if hasattr(out, "numpy") else [o for item in out for o in _flatten(item)]


def open_session(bundle: Bundle, threads: int | None) -> TVMSession:
    return TVMSession(bundle, threads)


def _describe(bundle: Bundle) -> list[tuple[str, str]]:
    s: TVMSettings = bundle.settings
    lines = [("library", f"{s.library} for {s.machine}: {s.target}"),
             ("buckets", f"sequence {', '.join(map(str, s.buckets))} at batch {s.batch} (feeds padded up)"),
             ("tuning", f"MetaSchedule, {s.tuned_trials} trials" if s.tuned_trials else "untuned (default schedules)")]
    if s.host_library:
        lines.append(("verified with", f"{s.host_library} (the same module for {s.host_machine}); the {s.machine} "
                                       "library has not run at export"))
    return lines


RUNTIME = RuntimeBackend(name="tvm", label="Apache TVM (Relax VM, CPU)", open_session=open_session,
                         settings=TVMSettings, install=INSTALL, describe=_describe,
                         warm_up=lambda settings: import_tvm())
