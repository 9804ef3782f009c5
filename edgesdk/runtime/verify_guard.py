"""`edgesdk verify`'s contract: 0 pass, 1 fidelity failure, 2 invalid or refused bundle, never a traceback.

`verify_bundle` raises BundleError for what it checks itself (hashes, format); anything else a runtime or numpy
raises on a damaged or hostile bundle (a model file the runtime cannot parse, a golden file that is not an npz,
a manifest field of the wrong type) is wrapped here in a BundleError naming the bundle, so the CLI prints one
`error:` line and exits 2.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError, EdgeSDKError
from .verify import VerifyResult, verify_bundle


def verify_checked(path: str | Path, threads: int | None = None, trusted_keys=None) -> VerifyResult:
    """verify_bundle, after a signature check when trusted_keys (public key PEM paths) are given."""
    try:
        if trusted_keys:
            from .manifest import read_bundle
            from .signing import require_signature

            require_signature(read_bundle(path), trusted_keys)
        return verify_bundle(path, threads=threads)
    except EdgeSDKError:
        raise
    except Exception as exc:  # noqa: BLE001 - the point: no runtime failure escapes as a traceback
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise BundleError(f"bundle '{path}' could not be verified: {type(exc).__name__}"
                          f"{': ' + detail if detail else ''}. The bundle is damaged, incomplete or not made by "
                          "this edgesdk; re-export it.") from exc
