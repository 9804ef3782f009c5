"""Target profiles: what a device needs, as data (targets/*.toml), validated into frozen dataclasses.

A profile never says *how* edgesdk does something; it says what the hardware accepts: backend, device hints,
precisions, the quantization scheme the hardware requires, the shape policy, a memory budget and a fidelity budget.
`load_profile("intel")` finds a bundled profile by name; `load_profile("./board.toml")` reads a user's file.
Unknown keys and bad values raise ProfileError naming the key, the allowed values and the file.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ProfileError

BACKENDS = ("openvino", "onnxruntime", "tflite", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
QUANT_MODES = ("dynamic", "static", "weight-only")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")
ACT_DTYPES = ("int8", "int16")
GRANULARITIES = ("per_channel", "per_tensor")
SHAPE_POLICIES = ("dynamic", "static", "profiles")
BUNDLED = "bundled:"  # prefix of a bundled profile's source


@dataclass(frozen=True)
class QuantDefaults:
    """The quantization scheme the hardware requires; QuantSpec starts from this."""

    mode: str = "static"
    weight_dtype: str = "int8"
    weight_granularity: str = "per_channel"
    weight_symmetric: bool = True
    activation_dtype: str = "int8"
    activation_symmetric: bool = False
    activation_symmetric_required: bool = False  # TensorRT: zero-point must be 0
    int16_activations_allowed: bool = False
    full_integer: bool = False  # NPU / NNAPI: no float op on the main path
    calibration_method: str = "minmax"
    samples: int = 300
    float_ops: tuple[str, ...] = ()  # op types ("Softmax") or node-name regexes kept in float
    smooth_quant: bool = True  # SmoothQuant migrates activation outliers into the weights (transformers)


@dataclass(frozen=True)
class ShapePolicy:
    policy: str = "dynamic"
    max_seq: int = 256
    seq: int = 128  # the static sequence length (static policy) or the opt profile
    batch: int = 1
    min_shape: tuple[int, int] = (1, 1)
    opt_shape: tuple[int, int] = (1, 128)
    max_shape: tuple[int, int] = (8, 256)


@dataclass(frozen=True)
class DeviceHints:
    device: str = "CPU"  # OpenVINO device name, or a free label for other backends
    delegates: tuple[str, ...] = ()  # TFLite delegate preference, best first
    dla_core: int = -1  # TensorRT DLA core, -1 = GPU only
    gpu_fallback: bool = True
    workspace_mb: int = 0
    tensorrt_version: str = ""
    opset: int = 17


@dataclass(frozen=True)
class MemoryBudget:
    budget_mb: int = 0  # 0 = unknown
    shared_with_cpu: bool = False
    note: str = ""


@dataclass(frozen=True)
class FidelityBudget:
    cosine_mean: float = 0.995
    cosine_min: float = 0.98  # embeddings only: for classifiers a label flip at the decision boundary swings it
    top1_agreement_min: float = 0.97  # classifiers: share of held-out texts labelled as FP32 labels them


@dataclass(frozen=True)
class TargetProfile:
    name: str
    backend: str
    description: str = ""
    precisions: tuple[str, ...] = ("int8", "fp32")  # accepted, best first
    default_precisions: tuple[str, ...] = ("fp32", "int8")  # what `export` builds without --precision
    quant: QuantDefaults = field(default_factory=QuantDefaults)
    shapes: ShapePolicy = field(default_factory=ShapePolicy)
    device: DeviceHints = field(default_factory=DeviceHints)
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


_SECTIONS = {"quant": QuantDefaults, "shapes": ShapePolicy, "device": DeviceHints,
             "memory": MemoryBudget, "fidelity": FidelityBudget}
_CHOICES = {
    ("", "backend"): BACKENDS,
    ("quant", "mode"): QUANT_MODES,
    ("quant", "calibration_method"): CALIBRATION_METHODS,
    ("quant", "activation_dtype"): ACT_DTYPES,
    ("quant", "weight_dtype"): ("int8",),
    ("quant", "weight_granularity"): GRANULARITIES,
    ("shapes", "policy"): SHAPE_POLICIES,
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
    text, source = _read_profile_text(str(target))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {source} is not valid TOML: {exc}") from exc
    return _build(data, source, hashlib.sha256(text.encode()).hexdigest())


def _read_profile_text(target: str) -> tuple[str, str]:
    if target.endswith(".toml") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise ProfileError(f"profile file '{target}' does not exist. Pass a bundled target name "
                               f"({', '.join(bundled_profiles())}) or the path of a .toml profile.")
        return path.read_text(encoding="utf-8"), str(path)
    names = bundled_profiles()
    if target not in names:
        raise ProfileError(f"unknown target '{target}'. Bundled targets: {', '.join(names)}; "
                           "or pass a profile file such as ./my-board.toml (see `edgesdk targets`).")
    return (_targets_dir() / f"{target}.toml").read_text(encoding="utf-8"), f"{BUNDLED}{target}.toml"


def _build(data: dict[str, Any], source: str, digest: str) -> TargetProfile:
    top = {f.name for f in fields(TargetProfile)} - {"source", "content_sha256"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top:
            raise ProfileError(f"{source}: unknown key '{key}'. Allowed top-level keys: {', '.join(sorted(top))}.")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ProfileError(f"{source}: '{key}' must be a table ([{key}]), got {value!r}.")
            kwargs[key] = _build_section(key, _SECTIONS[key], value, source)
        else:
            kwargs[key] = _coerce(source, "", key, value, TargetProfile)
    for required in ("name", "backend"):
        if required not in kwargs:
            raise ProfileError(f"{source}: missing required key '{required}'.")
    profile = TargetProfile(**kwargs, source=source, content_sha256=digest)
    _check_consistency(profile)
    return profile


def _build_section(section: str, cls: type, values: dict[str, Any], source: str):
    allowed = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in allowed:
            raise ProfileError(f"{source}: unknown key '{section}.{key}'. Allowed: {', '.join(sorted(allowed))}.")
        kwargs[key] = _coerce(source, section, key, value, cls)
    return cls(**kwargs)


def _coerce(source: str, section: str, key: str, value: Any, cls: type) -> Any:
    where = f"{section}.{key}" if section else key
    default = next(f for f in fields(cls) if f.name == key)
    expected = default.type
    if isinstance(value, list):
        if "tuple" not in str(expected):
            raise ProfileError(f"{source}: '{where}' must not be a list, got {value!r}.")
        value = tuple(value)
    elif "tuple" in str(expected):
        raise ProfileError(f"{source}: '{where}' must be a list, got {value!r}.")
    elif expected in ("bool",) and not isinstance(value, bool):
        raise ProfileError(f"{source}: '{where}' must be true or false, got {value!r}.")
    elif expected == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ProfileError(f"{source}: '{where}' must be an integer, got {value!r}.")
    elif expected == "float" and not isinstance(value, (int, float)):
        raise ProfileError(f"{source}: '{where}' must be a number, got {value!r}.")
    elif expected == "str" and not isinstance(value, str):
        raise ProfileError(f"{source}: '{where}' must be a string, got {value!r}.")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise ProfileError(f"{source}: '{where}' = {value!r} is not supported. Allowed: {', '.join(choices)}.")
    if key in ("precisions", "default_precisions"):
        bad = [p for p in value if p not in PRECISIONS]
        if bad:
            raise ProfileError(f"{source}: '{where}' has {bad}; allowed precisions: {', '.join(PRECISIONS)}.")
    return value


def _check_consistency(p: TargetProfile) -> None:
    extra = [x for x in p.default_precisions if x not in p.precisions]
    if extra:
        raise ProfileError(f"{p.source}: default_precisions {extra} are not in precisions {list(p.precisions)}.")
    if p.quant.activation_symmetric_required and not p.quant.activation_symmetric:
        raise ProfileError(f"{p.source}: quant.activation_symmetric_required needs quant.activation_symmetric = true.")
    if not all(0 < v <= 1 for v in (p.fidelity.cosine_min, p.fidelity.cosine_mean, p.fidelity.top1_agreement_min)):
        raise ProfileError(f"{p.source}: fidelity budgets must be in (0, 1], got {p.fidelity}.")
