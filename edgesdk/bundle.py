"""Writing bundles: stage in a hidden sibling folder, hash every file, self-hash the manifest, then rename.

A reader never sees a half-written bundle: the final folder appears in one `rename`, and an existing bundle of the
same name is swapped out only after the new one is complete. The reader lives in `edgesdk.runtime.manifest`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from .runtime.manifest import MANIFEST, FileEntry, Manifest, read_bundle, sha256_file
from .runtime.unfinished import INCOMPLETE, reading_staged, write_owner_record
from .swap import exchange


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    write_owner_record(path / INCOMPLETE)  # unloadable until the rename
    return path


def file_table(root: Path) -> dict[str, FileEntry]:
    return {p.relative_to(root).as_posix(): FileEntry(bytes=p.stat().st_size, sha256=sha256_file(p))
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, INCOMPLETE)}


def finalize(staging: Path, final: Path, manifest: Manifest) -> Path:
    """Hash the staged files into the manifest, seal it, write it, and move the bundle into place atomically."""
    sealed = manifest.sealed(file_table(staging))
    tmp = staging / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(sealed.to_json(), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, staging / MANIFEST)
    with reading_staged(staging):
        read_bundle(staging)  # the bundle must read back before it replaces anything
    (staging / INCOMPLETE).unlink()  # the hidden staging name keeps it unloadable until the rename commits it
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists() and exchange(staging, final):  # one atomic swap: a reader sees the old bundle or the new
        os.replace(staging, old)  # the staging path now holds the old bundle
    else:
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
