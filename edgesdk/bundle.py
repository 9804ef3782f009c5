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


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def file_table(root: Path) -> dict[str, FileEntry]:
    return {p.relative_to(root).as_posix(): FileEntry(bytes=p.stat().st_size, sha256=sha256_file(p))
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != MANIFEST}


def finalize(staging: Path, final: Path, manifest: Manifest) -> Path:
    """Hash the staged files into the manifest, seal it, write it, and move the bundle into place atomically."""
    sealed = manifest.sealed(file_table(staging))
    tmp = staging / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(sealed.to_json(), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, staging / MANIFEST)
    read_bundle(staging)  # the bundle must read back before it replaces anything
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
