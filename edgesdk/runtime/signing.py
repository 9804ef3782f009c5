"""Signed bundles: an Ed25519 signature over the manifest's canonical bytes, checked against keys you trust.

The manifest lists the sha256 of every file and hashes itself, but that self-hash is unkeyed: it catches a
damaged or carelessly edited bundle, not a forged one (anyone can recompute it). A signature by a private key
that only the publisher holds covers the manifest, and through its file table every file, so `load(bundle,
trusted_keys=[...])` and `edgesdk verify --key PUB` refuse a bundle that is unsigned, signed by another key, or
changed after signing. Keys are standard PEM (PKCS#8 private, SubjectPublicKeyInfo public); the signatures sit
in `signature.json` beside the manifest (not in its file table: they are added after export).

On-device side: the standard library and `cryptography` only (pip install 'edgesdk[sign]').
Why not OpenSSF model-signing: it signs a folder with its own manifest and pulls sigstore, pydantic and TUF
onto the device; edgesdk already has a manifest that hashes every file, so one Ed25519 signature over it is
the whole job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Union

from ..errors import BundleError, EdgeSDKError, require
from .manifest import MANIFEST, SIGNATURES, Bundle, read_bundle
FORMAT = "edgesdk-signature/1"
PRIVATE_NAME, PUBLIC_NAME = "edgesdk-signing.key", "edgesdk-signing.pub"
KeyLike = Union[str, Path, bytes, Any]  # a PEM path, PEM bytes, or an Ed25519PublicKey


class SigningError(EdgeSDKError):
    """A key cannot be read or used for signing."""


def canonical_manifest(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the whole manifest (its self-hash and file table included), canonical JSON."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def keygen(out: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair to OUT/edgesdk-signing.key (mode 0600) and .pub; never overwrites."""
    serialization = _serialization()
    ed25519 = _ed25519()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            raise SigningError(f"'{path}' exists; keygen never overwrites a key. Pick another --out folder.")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def key_id(public_key) -> str:
    serialization = _serialization()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_id(key: KeyLike) -> str:
    """The id signatures name their key by: sha256 of the raw Ed25519 public key, 16 hex digits."""
    return key_id(_public_key(key))


def sign_bundle(path: str | Path, private_key: str | Path) -> dict[str, Any]:
    """Verify the bundle's hashes, then add (or replace) this key's signature in its signature.json."""
    bundle = read_bundle(path)
    key = _private_key(Path(private_key))
    entry = {"algorithm": "ed25519", "key_id": key_id(key.public_key()), "covers": MANIFEST,
             "signature": base64.b64encode(key.sign(canonical_manifest(bundle.manifest.to_json()))).decode("ascii")}
    existing = [e for e in _signatures(bundle.path, required=False) if e.get("key_id") != entry["key_id"]]
    record = {"format": FORMAT, "signatures": existing + [entry]}
    partial = bundle.path / (SIGNATURES + ".partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, bundle.path / SIGNATURES)
    return entry


def require_signature(bundle: Bundle, trusted_keys: Iterable[KeyLike]) -> str:
    """Return the key id that signed this (already hash-verified) bundle; BundleError if none of the keys did."""
    keys = {key_id(k): k for k in (_public_key(k) for k in _as_list(trusted_keys))}
    if not keys:
        raise BundleError("trusted_keys is empty: pass at least one public key (PEM path or bytes), or leave "
                          "trusted_keys unset to load without a signature check.")
    message = canonical_manifest(bundle.manifest.to_json())
    signatures = _signatures(bundle.path, required=True)
    invalid = _exceptions().InvalidSignature
    for entry in signatures:
        key = keys.get(entry.get("key_id"))
        if key is None or entry.get("algorithm") != "ed25519":
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("signature", "")), validate=True), message)
            return entry["key_id"]
        except (invalid, ValueError):
            raise BundleError(f"bundle '{bundle.path}': the signature by key {entry['key_id']} does not match its "
                              "manifest: the bundle was changed after signing, or the signature is forged. Do not "
                              "use it; get the bundle again from its publisher.") from None
    found = sorted(str(e.get("key_id")) for e in signatures)
    raise BundleError(f"bundle '{bundle.path}' is not signed by a trusted key (signed by {found or 'nobody'}; "
                      f"trusted: {sorted(keys)}). Sign it with `edgesdk sign BUNDLE --key KEY`, or pass the "
                      "publisher's public key.")


def _signatures(root: Path, required: bool) -> list[dict[str, Any]]:
    path = root / SIGNATURES
    if not path.is_file():
        if required:
            raise BundleError(f"bundle '{root}' is unsigned (no {SIGNATURES}), and a signature is required. "
                              "Sign it with `edgesdk sign BUNDLE --key KEY`.")
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        entries = record["signatures"] if record.get("format") == FORMAT else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"not a {FORMAT} record")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}); re-sign the bundle.") from None
    return entries


def _private_key(path: Path):
    serialization = _serialization()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"cannot read the private key '{path}' ({exc}). Pass the PEM file `edgesdk keygen` "
                           "wrote (edgesdk-signing.key).") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise SigningError(f"'{path}' is a {type(key).__name__}; edgesdk signs with Ed25519 keys "
                           "(make one with `edgesdk keygen --out DIR`).")
    return key


def _public_key(key: KeyLike):
    ed25519, serialization = _ed25519(), _serialization()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    try:
        pem = key if isinstance(key, bytes) else Path(key).read_bytes()
        loaded = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read the trusted public key {str(key)[:80]!r} ({exc}); pass a PEM public key "
                          "(edgesdk-signing.pub).") from None
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise BundleError(f"trusted key {str(key)[:80]!r} is not an Ed25519 public key.")
    return loaded


def _as_list(keys: Iterable[KeyLike]) -> list:
    if isinstance(keys, (str, Path, bytes)) or hasattr(keys, "public_bytes"):
        return [keys]
    return list(keys)


def _ed25519():
    return require("cryptography.hazmat.primitives.asymmetric.ed25519", "sign")


def _serialization():
    return require("cryptography.hazmat.primitives.serialization", "sign")


def _exceptions():
    return require("cryptography.exceptions", "sign")
