"""The EdgeSDKError family: every failure a user can cause ends in one of these.

Each message names the bad value, what is allowed, and the next step, so a user can fix the call
without reading edgesdk's source. Catch `EdgeSDKError` to catch them all.
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Root of every error edgesdk raises on purpose."""


class ProfileError(EdgeSDKError):
    """A target profile is unknown, unreadable or invalid."""


class ModelSourceError(EdgeSDKError):
    """The model path, file or tokenizer cannot be used."""


class InputError(EdgeSDKError):
    """Bad input to a runner, an evaluation or a calibration set (empty, wrong type, ...)."""


class BundleError(EdgeSDKError):
    """A bundle is missing, incomplete, tampered with or of an unknown format."""


class MissingDependencyError(EdgeSDKError):
    """An optional extra is not installed; the message names the `pip install` to run."""


class BackendNotAvailableError(EdgeSDKError):
    """The target's backend is not implemented or cannot run on this machine."""


class QuantizationError(EdgeSDKError):
    """Quantization could not meet the spec or the fidelity budget."""


class FidelityError(QuantizationError):
    """The artefact's outputs drift from FP32 beyond the profile's budget (best reached is in the message).

    `attempts` holds the fidelity of every build the fallback loop tried, in order.
    """

    def __init__(self, message: str, attempts: list | None = None):
        super().__init__(message)
        self.attempts = attempts or []


def require(module: str, extra: str):
    """Import an optional module, or raise MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{module}' is not installed ({exc}). Install it with: pip install 'edgesdk[{extra}]'"
        ) from exc


class InferenceError(EdgeSDKError):
    """The runtime failed on an input that passed validation; the message names the feeds."""
