"""Target profiles: what a device needs, as data (targets/*.toml), validated into frozen dataclasses.

A profile never says *how* edgesdk does something; it says what the hardware accepts: backend, device hints,
precisions, the quantization scheme the hardware requires, the shape policy, a memory budget and a fidelity budget.
`load_profile("intel")` finds a bundled profile by name; `load_profile("./board.toml")` reads a user's file.
Unknown keys and bad values raise ProfileError naming the key, the allowed values and the file.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import EdgeSDKError, ProfileError
from .quant.spec import CALIBRATION_METHODS, QUANT_MODES
from .runtime.schema import JSON, check, decode

PRECISIONS = ("fp32", "fp16", "int8")
ACT_DTYPES = ("int8", "int16")
GRANULARITIES = ("per_channel", "per_tensor")
SHAPE_POLICIES = ("dynamic", "static", "profiles")
NAME = r"[a-z0-9][a-z0-9._-]*"
BUNDLED = "bundled:"  # prefix of a bundled profile's source
MAX_PROFILE_BYTES = 1 << 20
MAX_DIM = 1 << 20


@dataclass(frozen=True)
class QuantDefaults:
    """The quantization scheme the hardware requires; QuantSpec starts from this."""

    mode: str = field(default="static", metadata=check(choices=QUANT_MODES))
    weight_dtype: str = field(default="int8", metadata=check(choices=("int8",)))
    weight_granularity: str = field(default="per_channel", metadata=check(choices=GRANULARITIES))
    weight_symmetric: bool = True
    activation_dtype: str = field(default="int8", metadata=check(choices=ACT_DTYPES))
    activation_symmetric: bool = False
    activation_symmetric_required: bool = False  # TensorRT: zero-point must be 0
    int16_activations_allowed: bool = False
    full_integer: bool = False  # NPU / NNAPI: no float op on the main path
    calibration_method: str = field(default="minmax", metadata=check(choices=CALIBRATION_METHODS))
    samples: int = field(default=300, metadata=check(min=1, max=100_000))
    float_ops: tuple[str, ...] = field(default=(), metadata=check(pattern=r".+"))  # op types or name regexes
    smooth_quant: bool = True  # SmoothQuant migrates activation outliers into the weights (transformers)
    # modes also built, timed and compared on a CPU without int8 dot-product instructions (no VNNI/AMX/dotprod),
    # where static int8 may be no faster than fp32: the fastest that meets the fidelity budget is kept
    without_int8_dot: tuple[str, ...] = field(default=(), metadata=check(choices=QUANT_MODES))


@dataclass(frozen=True)
class ShapePolicy:
    policy: str = field(default="dynamic", metadata=check(choices=SHAPE_POLICIES))
    max_seq: int = field(default=256, metadata=check(min=1, max=MAX_DIM))  # longest sequence the device runs
    seq: int = field(default=128, metadata=check(min=1, max=MAX_DIM))  # the static length, or the opt profile
    # static policy: the sequence lengths built, each a static shape of its own (a batch runs in the smallest that
    # fits it); empty = just `seq`
    buckets: tuple[int, ...] = field(default=(), metadata=check(min=1, max=MAX_DIM))
    min_shape: tuple[int, int] = field(default=(1, 1), metadata=check(min=1, max=MAX_DIM))
    opt_shape: tuple[int, int] = field(default=(1, 128), metadata=check(min=1, max=MAX_DIM))
    max_shape: tuple[int, int] = field(default=(8, 256), metadata=check(min=1, max=MAX_DIM))

    def __post_init__(self):
        if not all(a <= b <= c for a, b, c in zip(self.min_shape, self.opt_shape, self.max_shape)):
            raise ValueError(f"needs min_shape <= opt_shape <= max_shape per axis, got {list(self.min_shape)}, "
                             f"{list(self.opt_shape)}, {list(self.max_shape)}")

    def static_lengths(self) -> tuple[int, ...]:
        """The static sequence lengths to build, shortest first."""
        return tuple(sorted(set(self.buckets))) if self.buckets else (self.seq,)

    def planning_shape(self) -> tuple[int, int]:
        """The (batch, seq) the memory plan sizes: the largest this device is asked to run."""
        if self.policy == "profiles":
            return self.max_shape
        return (1, self.static_lengths()[-1]) if self.policy == "static" else (1, self.max_seq)


@dataclass(frozen=True)
class MemoryBudget:
    budget_mb: int = field(default=0, metadata=check(min=0, max=1 << 24))  # 0 = unknown
    shared_with_cpu: bool = False
    note: str = ""


@dataclass(frozen=True)
class FidelityBudget:
    cosine_mean: float = field(default=0.995, metadata=check(min=0.0, max=1.0))
    cosine_min: float = field(default=0.98, metadata=check(min=0.0, max=1.0))  # embeddings only
    top1_agreement_min: float = field(default=0.97, metadata=check(min=0.0, max=1.0))  # classifiers


@dataclass(frozen=True)
class _ProfileFile:
    """The TOML as written; [device] is checked afterwards against the backend's own hints type."""

    name: str = field(metadata=check(pattern=NAME))
    backend: str = field(metadata=check(pattern=NAME))
    description: str = ""
    precisions: tuple[str, ...] = field(default=("int8", "fp32"), metadata=check(choices=PRECISIONS, nonempty=True))
    default_precisions: tuple[str, ...] = field(default=("fp32", "int8"),
                                                metadata=check(choices=PRECISIONS, nonempty=True))
    quant: QuantDefaults = field(default_factory=QuantDefaults)
    shapes: ShapePolicy = field(default_factory=ShapePolicy)
    device: dict[str, JSON] = field(default_factory=dict)
    memory: MemoryBudget = field(default_factory=MemoryBudget)
    fidelity: FidelityBudget = field(default_factory=FidelityBudget)


@dataclass(frozen=True)
class TargetProfile:
    name: str
    backend: str
    description: str = ""
    precisions: tuple[str, ...] = ("int8", "fp32")  # accepted, best first
    default_precisions: tuple[str, ...] = ("fp32", "int8")  # what `export` builds without --precision
    quant: QuantDefaults = field(default_factory=QuantDefaults)
    shapes: ShapePolicy = field(default_factory=ShapePolicy)
    device: Any = None  # the backend's own [device] dataclass (backends/<x>.py)
    memory: MemoryBudget = field(default_factory=MemoryBudget)
    fidelity: FidelityBudget = field(default_factory=FidelityBudget)
    source: str = ""
    content_sha256: str = ""

    @property
    def reference(self) -> str:
        """What load_profile() takes to reach this same profile again: its file, or its bundled name."""
        return self.name if self.source.startswith(BUNDLED) else self.source

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "device": self.device.device,
            "precisions": list(self.precisions),
            "description": self.description,
        }


def _targets_dir():
    """The bundled profiles: the installed `edgesdk.targets` package, or `targets/` of a source checkout run from
    PYTHONPATH without installing (e.g. scripts/train_speed.py on a training box)."""
    try:
        return resources.files("edgesdk.targets")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "targets"


def bundled_profiles() -> list[str]:
    """Names of the profiles shipped with edgesdk."""
    return sorted(p.name[:-5] for p in _targets_dir().iterdir() if p.name.endswith(".toml"))


def list_targets() -> list[TargetProfile]:
    return [load_profile(name) for name in bundled_profiles()]


def load_profile(target: str | Path) -> TargetProfile:
    """A bundled profile by name ('intel') or a user's TOML file ('./board.toml')."""
    if isinstance(target, TargetProfile):
        return target
    raw, source = _read_profile_bytes(str(target))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {source} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {source} is not valid TOML: {exc}") from exc
    except RecursionError:
        raise ProfileError(f"profile {source} is nested too deeply to be a target profile.") from None
    return _build(data, source, hashlib.sha256(raw).hexdigest())


def _read_profile_bytes(target: str) -> tuple[bytes, str]:
    if target.endswith(".toml") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise ProfileError(f"profile file '{target}' does not exist. Pass a bundled target name "
                               f"({', '.join(bundled_profiles())}) or the path of a .toml profile.")
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"profile file '{target}' is {path.stat().st_size} bytes; a profile is at most "
                               f"{MAX_PROFILE_BYTES} bytes.")
        return path.read_bytes(), str(path)
    names = bundled_profiles()
    if target not in names:
        raise ProfileError(f"unknown target '{target}'. Bundled targets: {', '.join(names)}; "
                           "or pass a profile file such as ./my-board.toml (see `edgesdk targets`).")
    return (_targets_dir() / f"{target}.toml").read_bytes(), f"{BUNDLED}{target}.toml"


def _build(data: dict[str, Any], source: str, digest: str) -> TargetProfile:
    from .backends import backend as export_backend

    raw = decode(_ProfileFile, data, ProfileError, context=f"{source}: ")
    try:
        backend = export_backend(raw.backend)
    except EdgeSDKError as exc:
        raise ProfileError(f"{source}: 'backend' = {raw.backend!r}: {exc}") from None
    device = decode(backend.device, raw.device, ProfileError, "device", f"{source}: ")
    values = {f: getattr(raw, f) for f in ("name", "backend", "description", "precisions", "default_precisions",
                                           "quant", "shapes", "memory", "fidelity")}
    profile = TargetProfile(**values, device=device, source=source, content_sha256=digest)
    _check_consistency(profile, backend)
    return profile


def _check_consistency(p: TargetProfile, backend) -> None:
    extra = [x for x in p.default_precisions if x not in p.precisions]
    if extra:
        raise ProfileError(f"{p.source}: default_precisions {extra} are not in precisions {list(p.precisions)}.")
    unbuilt = [x for x in p.precisions if x not in backend.precisions]
    if unbuilt:
        raise ProfileError(f"{p.source}: precisions {unbuilt} are not built by the {p.backend} backend; it builds "
                           f"{', '.join(backend.precisions)}.")
    if p.shapes.policy not in backend.shape_policies:
        raise ProfileError(f"{p.source}: 'shapes.policy' = {p.shapes.policy!r} is not what the {p.backend} backend "
                           f"builds; use {' or '.join(map(repr, backend.shape_policies))}.")
    if p.quant.activation_symmetric_required and not p.quant.activation_symmetric:
        raise ProfileError(f"{p.source}: quant.activation_symmetric_required needs quant.activation_symmetric = true.")
