"""Export-side backends, found by file name: `edgesdk/backends/<backend>.py` defining `BACKEND = Backend(...)`.

A backend describes itself once: `convert(ctx) -> Artefact` (the optimised FP32 ONNX, or the source's torch module,
into its runtime's artefact at the asked precision, materialising the shared QuantSpec with its own field's tool),
the typed dataclass of its profiles' `[device]` table, which precisions and QuantSpec values it builds (anything
else is refused before work starts, naming the backend and the alternatives), its memory traits for the planner,
the tool versions its manifests record and the pip extra it needs. Its on-device half is
`edgesdk/runtime/<backend>.py`. Verification is not a backend's job: the pipeline runs every artefact through the
on-device runner afterwards. Nothing outside these two modules branches on a backend's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BackendNotAvailableError, QuantizationError
from ..runtime.registry import described, discover

if TYPE_CHECKING:
    from ..frontends.source import SourceModel
    from ..memory.runtime_model import RuntimeModel
    from ..quant import CalibrationSet, QuantSpec


@dataclass
class ConvertContext:
    source: "SourceModel"
    onnx_path: Path  # the optimised FP32 ONNX
    out_dir: Path  # the staging bundle folder; write artefact files here
    precision: str
    spec: "QuantSpec"
    calibration: "CalibrationSet | None"
    profile: Any  # edgesdk.profiles.TargetProfile (profiles reads the backends' [device] types: no import back)
    keep_float: tuple[str, ...] = ()  # node names the fallback loop returns to float
    work_dir: Path | None = None  # the export's scratch folder (deleted at its end): caches across fallback builds
    cache: dict[Any, Any] = field(default_factory=dict)  # in-memory results shared by this export's builds


@dataclass
class Artefact:
    format: str
    entry: str  # the file the runner opens
    files: list[str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)  # manifest target.settings (the runtime's typed settings)
    decisions: dict[str, Any] = field(default_factory=dict)  # what the quantizer was asked and did
    runtime_requirements: list[str] = field(default_factory=list)
    tokenizer: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. {"static_length": 128}


@dataclass(frozen=True)
class BackendOption:
    """A command-line flag a backend adds to `edgesdk export`: it sets one field of its profiles' [device] table."""

    flag: str  # e.g. "--tune-trials"
    field: str  # the [device] field it overrides, e.g. "tune_trials"
    type: Callable[[str], Any] = str
    help: str = ""


@dataclass(frozen=True)
class Backend:
    name: str
    convert: Callable[[ConvertContext], Artefact]
    device: type  # frozen dataclass of the profile's [device] table; must have a `device` label field
    precisions: tuple[str, ...]  # what convert() builds
    memory: "RuntimeModel"  # how its runtime holds a model in memory (the planner's model)
    extra: str  # pip extra with the converter and runtime, e.g. "openvino"
    tools: tuple[str, ...] = ()  # distributions whose versions its manifests record
    spec: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # QuantSpec field → values it honours
    shape_policies: tuple[str, ...] = ("dynamic",)
    batch_shapes: bool = False  # builds the static policy's batched shapes (profile shapes.batch_shapes)
    int4: tuple[bool, str] = (False, "not supported")  # weight-only int4: supported?, how / why not
    activation_bytes: Callable[[str, Any, bool], int | None] | None = None  # (precision, device, full_int) → bytes
    from_torch: bool = False  # converts the source's torch module (not the ONNX): needs a PyTorch source
    options: tuple[BackendOption, ...] = ()  # `edgesdk export` flags that override [device] fields
    requires: tuple[str, ...] = ()  # modules export needs beyond the core extras (e.g. "tvm"): see missing()
    families: tuple[str, ...] = ("text", "image", "tensor")  # model families it converts (edgesdk.families)

    def check_family(self, family: str, profile_name: str) -> None:
        """Refuse, before any conversion, a model family this backend does not convert, naming those that do."""
        if family not in self.families:
            others = sorted(b.name for b in backends().values() if family in b.families)
            from ..errors import ModelSourceError

            raise ModelSourceError(f"target '{profile_name}' ({self.name}) converts {', '.join(self.families)} models; "
                                   f"this is {'an' if family == 'image' else 'a'} {family} model. Backends that "
                                   f"convert {family} models: {', '.join(others) or 'none'}; drop the target or "
                                   "pick one of theirs.")

    def missing(self) -> str | None:
        """Why this backend cannot export in this environment (a required module does not import), or None."""
        import importlib

        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return f"{module} does not import ({exc}); pip install 'edgesdk[{self.extra}]'"
        return None

    def check_spec(self, spec: "QuantSpec", profile_name: str) -> None:
        """Refuse, before any work, a QuantSpec value this backend cannot honour, naming what it can."""
        for name, allowed in self.spec.items():
            value = getattr(spec, name)
            values = value if isinstance(value, tuple) else (value,)
            if name == "float_ops":
                if value and not allowed:
                    raise QuantizationError(f"target '{profile_name}' ({self.name}) cannot keep ops in float on "
                                            f"request (--float-ops {','.join(value)}); drop the flag or use a "
                                            f"target that can: {', '.join(_honouring(name))}.")
                continue
            bad = [v for v in values if v not in allowed]
            if bad:
                flag = "--" + name.replace("_", "-")
                raise QuantizationError(
                    f"target '{profile_name}' ({self.name}) cannot honour {name} = {bad[0]!r} ({flag}); it supports "
                    f"{', '.join(map(repr, allowed))}. Backends that support {bad[0]!r}: "
                    f"{', '.join(_honouring(name, bad[0])) or 'none'}.")


def _honouring(name: str, value: Any = None) -> list[str]:
    found = []
    for backend in backends().values():
        allowed = backend.spec.get(name)
        if allowed is None or (value is None and allowed) or (value is not None and value in allowed):
            found.append(backend.name)
    return sorted(found)


def backend(name: str) -> Backend:
    """The export backend `name` (the module edgesdk/backends/<name>.py), or an error listing the known ones."""
    found = _load(name) if isinstance(name, str) and name.isidentifier() else None
    if found is None:
        raise BackendNotAvailableError(f"this edgesdk has no export backend '{name}'. Backends: "
                                       f"{', '.join(sorted(backends()))} (one module each in edgesdk/backends/).")
    return found


def backends() -> dict[str, Backend]:
    """Every module in this package that defines BACKEND, by name (found like the runtimes: runtime/registry.py)."""
    return discover(__name__, __path__, "BACKEND", Backend)


def _load(name: str) -> Backend | None:
    return described(__name__, name, "BACKEND", Backend)


def onnx_io_specs(model) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Names, numpy dtypes and shapes (ints, or strings for dynamic axes) of an ONNX model's inputs/outputs."""
    import onnx

    init = {i.name for i in model.graph.initializer}

    def spec(value):
        tensor = value.type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else "?")
                 for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return ([spec(v) for v in model.graph.input if v.name not in init], [spec(v) for v in model.graph.output])
