"""The export's output folder, checked before any work, and what killed exports left behind, cleaned up.

`prepare(out, model, bundles)` runs first in `export()` (and the trained export), before the model is loaded:
`--out` must be a folder (or not exist yet under a folder) that this process can write to, on a file system with
room for the expected bundles (the source model's weight bytes per bundle, plus a margin). A failure is an
OutputError within a second, not a traceback after minutes of conversion. Then it removes what interrupted
exports left: staging folders in `--out` whose writing process is gone, `.old-` folders of a swap that never
finished, and edgesdk temp work folders whose owner (recorded in the folder) is gone, each with a log line.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import EdgeSDKError
from .runtime.unfinished import INCOMPLETE, is_staging_name, owner_gone, write_owner_record

log = logging.getLogger("edgesdk")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".data", ".pt", ".pth", ".h5", ".msgpack")
MARGIN_BYTES = 64 << 20  # tokenizer, golden files, reports, the manifest, file-system slack
MARGIN_SHARE = 0.10
TEMP_PREFIX = "edgesdk-"
OWNER = ".edgesdk-owner"
UNMARKED_STALE_SECONDS = 24 * 3600  # a staging folder without a marker (older edgesdk): removed after a day


class OutputError(EdgeSDKError):
    """The output folder cannot take the export: not a folder, not writable, or too little free space."""


def prepare(out: str | Path, model: str | Path | None, bundles: int, extra_models: int = 0) -> Path:
    """Check `out` (see the module docstring) and clean up after killed exports; returns `out` as a Path."""
    path = Path(out)
    check_writable(path)
    need = expected_bytes(model, bundles + extra_models)
    check_free_space(path, need)
    clean_stale(path)
    return path


def check_writable(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out '{path}' is an existing file, not a folder. Pass a folder (it is created if "
                          "missing), or move the file away.")
    base = existing_ancestor(path)
    if not base.is_dir():
        raise OutputError(f"--out '{path}': '{base}' is a file, so the folder cannot be created there. "
                          "Pass a path under a folder.")
    try:  # a real write, not os.access: root passes access(W_OK) on folders it cannot write for other reasons
        handle, probe = tempfile.mkstemp(prefix=".edgesdk-write-probe-", dir=base)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"--out '{path}' is not writable ({exc.strerror or exc} in '{base}'). Pass a folder "
                          "you can write to, or fix its permissions / remount it read-write.") from None


def existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def expected_bytes(model: str | Path | None, bundles: int) -> int:
    """Weight bytes of the source model × bundles, plus a margin: fp32 bundles are about the source's size."""
    weights = source_weight_bytes(model)
    return int(weights * max(bundles, 1) * (1 + MARGIN_SHARE)) + MARGIN_BYTES


def source_weight_bytes(model: str | Path | None) -> int:
    if model is None:
        try:
            from .frontends.source import default_model_path

            path = default_model_path()
        except EdgeSDKError:
            return 0  # the missing model package is reported, with its fix, by the frontend
    else:
        path = Path(model)
    if path.is_file():
        siblings = [path] + [p for p in path.parent.glob(path.name + "*") if p != path and p.suffix == ".data"]
        return sum(p.stat().st_size for p in siblings if p.is_file())
    if path.is_dir():  # one copy of the weights: folders often ship the same weights in several formats
        per_format: dict[str, int] = {}
        for p in path.rglob("*"):
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES:
                key = ".onnx" if p.suffix == ".data" else p.suffix  # ONNX external data belongs with its .onnx
                per_format[key] = per_format.get(key, 0) + p.stat().st_size
        return max(per_format.values(), default=0)
    return 0  # a missing model is the frontend's error to report, with its own message


def check_free_space(path: Path, need: int) -> None:
    base = existing_ancestor(path)
    free = shutil.disk_usage(base).free
    if free < need:
        raise OutputError(f"--out '{path}' has {free / 1e6:.1f} MB free on its file system; this export needs about "
                          f"{need / 1e6:.1f} MB (the model's weights per bundle, plus a margin). Free some space, or "
                          "pass --out on a larger disk.")


def claim(work_dir: Path) -> None:
    """Record this process as the owner of an edgesdk temp work folder, so a later export can tell it is stale."""
    write_owner_record(work_dir / OWNER)


def clean_stale(out: Path) -> None:
    if out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink() and is_staging_name(entry.name) and _stale_staging(entry):
                log.info("removing %s: left by an interrupted export", entry)
                shutil.rmtree(entry, ignore_errors=True)
    clean_stale_temp(Path(tempfile.gettempdir()))


def _stale_staging(entry: Path) -> bool:
    if ".old-" in entry.name:
        return True  # a replaced bundle: garbage from the moment the new one was renamed over it
    marker = entry / INCOMPLETE
    if marker.is_file():
        return owner_gone(marker)
    if (entry / "manifest.json").is_file():
        return True  # unmarked with a manifest: killed in the instant of the commit, or the old half of a swap
    try:  # unmarked without a manifest: empty (killed before its marker was in place: at most a half-written
        # marker.tmp is there), or an older edgesdk's staging (give it a day)
        return not any(p.name != INCOMPLETE + ".tmp" for p in entry.iterdir()) \
            or time.time() - entry.stat().st_mtime > UNMARKED_STALE_SECONDS
    except OSError:
        return False


def clean_stale_temp(temp: Path) -> None:
    try:
        entries = list(temp.glob(TEMP_PREFIX + "*"))
    except OSError:
        return
    uid = os.getuid()
    for entry in entries:
        try:
            mine = entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == uid
        except OSError:
            continue
        if mine and owner_gone(entry / OWNER):
            log.info("removing %s: the temp work folder of an export that is no longer running", entry)
            shutil.rmtree(entry, ignore_errors=True)
