"""Reading a bundle on the device: the manifest, its self-hash, and the sha256 of every file it lists.

This is the on-device half of the bundle format (the writer is `edgesdk.bundle`). It needs only the standard
library, so `edgesdk verify` and `load()` work on a board that has numpy, tokenizers and one runtime.
A bundle whose manifest was edited, or any of whose files is missing, truncated or modified, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .unfinished import refuse_unfinished

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own `manifest_sha256` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its folder and its manifest (a plain dict, as written)."""

    path: Path
    manifest: dict[str, Any]

    def file(self, relative: str) -> Path:
        return self.path / relative

    @property
    def backend(self) -> str:
        return self.manifest["target"]["backend"]

    @property
    def artefact(self) -> Path:
        return self.path / self.manifest["artefact"]["entry"]


def read_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Open a bundle folder, check its format version, its manifest self-hash and every file's sha256."""
    root = Path(path)
    refuse_unfinished(root)  # an interrupted export's staging folder is never a bundle
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle '{root}' is not a folder. Pass the folder `edgesdk export` wrote "
                          "(e.g. dist/all-minilm-l6-v2-intel-int8).")
    if not manifest_path.is_file():
        raise BundleError(f"bundle '{root}' has no {MANIFEST}: it is not an edgesdk bundle or it is incomplete. "
                          "Re-export it with `edgesdk export`.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); the bundle is damaged. Re-export it.") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} does not hold a JSON object; the bundle is damaged. Re-export it.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle '{root}' has format_version {version!r}; this edgesdk reads {FORMAT_VERSION}. "
                          "Re-export the bundle with this edgesdk version, or install the edgesdk that wrote it.")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise BundleError(f"{manifest_path} was modified after export (its self-hash does not match). "
                          "A bundle is read-only: re-export it instead of editing the manifest.")
    if verify_hashes:
        verify_files(root, manifest)
    return Bundle(root, manifest)


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    problems = []
    for relative, meta in sorted(manifest.get("files", {}).items()):
        target = root / relative
        if not target.is_file():
            problems.append(f"missing: {relative}")
        elif target.stat().st_size != meta["bytes"]:
            problems.append(f"size changed: {relative} ({target.stat().st_size} bytes, manifest says {meta['bytes']})")
        elif sha256_file(target) != meta["sha256"]:
            problems.append(f"content changed: {relative} (sha256 differs)")
    if problems:
        raise BundleError(f"bundle '{root}' failed verification: " + "; ".join(problems)
                          + ". The bundle was modified or damaged; re-export it.")
