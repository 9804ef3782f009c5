"""The bundle manifest: typed (frozen dataclasses, versioned schema), shared by the exporter and the device.

The exporter (`edgesdk.api`, `edgesdk.bundle`) builds one `Manifest` and writes it; `read_bundle()` here reads it
back on the device with only the standard library: every field is checked for type and range (`schema.decode`),
the self-hash must match, every path stays inside the bundle (relative, no '..', no symlinks), every file the
manifest names is in its file table, every file in the folder is in the table, and each file's sha256 matches.
Anything else is a BundleError naming the field or file and the fix. A backend's own target settings
(`target.settings`) are decoded by that backend's runtime module into its typed settings (`Bundle.settings`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .schema import JSON, check, decode, encode
from .unfinished import INCOMPLETE, refuse_unfinished

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
DTYPES = ("int64", "int32", "float32", "float16", "uint8", "int8", "bool")
TASKS = ("embedding", "classification", "tensor")
FAMILIES = ("text", "image", "tensor")  # what the runner feeds: token ids, preprocessed images, raw tensors
POOLINGS = ("mean", "cls", "softmax", "none")
PRECISIONS = ("fp32", "fp16", "int8")
NAME = r"[a-z0-9][a-z0-9._-]*"
SHA256 = r"[0-9a-f]{64}"
# relative, '/'-separated; every part starts with a letter, digit or '_': no '', '.', '..', hidden or absolute paths
RELPATH = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*"
HARMLESS = (".DS_Store", "Thumbs.db")  # left by file managers; reported, not refused
SIGNATURES = "signature.json"  # added after export by `edgesdk sign` (runtime/signing.py): outside the file table
MAX_DIM = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    name: str = field(metadata=check(nonempty=True))
    dtype: str = field(metadata=check(choices=DTYPES))
    shape: tuple[int | str, ...] = field(metadata=check(min=1, max=MAX_DIM))

    @property
    def static(self) -> tuple[int | None, ...]:
        return tuple(d if isinstance(d, int) else None for d in self.shape)


@dataclass(frozen=True)
class ModelInfo:
    name: str = field(metadata=check(nonempty=True))
    source: str
    task: str = field(metadata=check(choices=TASKS))
    pooling: str = field(metadata=check(choices=POOLINGS))
    normalize: bool
    labels: tuple[str, ...] = ()
    family: str = field(default="text", metadata=check(choices=FAMILIES))
    training: JSON | None = None  # what edgesdk trained it on (display only)
    prompts: dict[str, str] = field(default_factory=dict)  # sentence-transformers prompts, e.g. {"query": "query: "}
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = field(default=None, metadata=check(choices=("cosine", "dot", "euclidean",
                                                                                 "manhattan")))


@dataclass(frozen=True)
class TargetInfo:
    name: str = field(metadata=check(pattern=NAME))
    profile_sha256: str = field(metadata=check(pattern=SHA256))
    backend: str = field(metadata=check(pattern=NAME))
    description: str = ""
    settings: JSON = field(default_factory=dict)  # decoded by the backend's runtime module (Bundle.settings)


@dataclass(frozen=True)
class KeptLayer:
    node: str
    rank: int = field(metadata=check(min=1))
    added_error: float
    reason: str


@dataclass(frozen=True)
class Quantization:
    spec: JSON | None = None
    decisions: JSON = field(default_factory=dict)
    kept_in_float: tuple[KeptLayer, ...] = ()
    qat: JSON | None = None


@dataclass(frozen=True)
class ArtefactInfo:
    format: str = field(metadata=check(nonempty=True))
    entry: str = field(metadata=check(pattern=RELPATH))
    files: tuple[str, ...] = field(metadata=check(pattern=RELPATH, nonempty=True))


@dataclass(frozen=True)
class TokenizerInfo:
    path: str = field(metadata=check(pattern=RELPATH))
    max_length: int = field(metadata=check(min=1, max=MAX_DIM))
    static_length: int | None = field(default=None, metadata=check(min=1, max=MAX_DIM))
    pad_id: int = field(default=0, metadata=check(min=0))
    pad_token: str = "[PAD]"


@dataclass(frozen=True)
class ImageInfo:
    """How the runner turns an image into the model's input (edgesdk.runtime.image): resize the shorter side to
    `resize_shorter` then centre-crop to `size`, or (None) resize straight to `size`; then pixels × rescale_factor,
    minus mean, over std, per channel, in `channel_order` and `layout`."""

    input: str = field(metadata=check(nonempty=True))
    size: tuple[int, int] = field(metadata=check(min=1, max=16384))  # (H, W) the model takes
    channels: int = field(default=3, metadata=check(choices=(1, 3)))
    resize_shorter: int | None = field(default=None, metadata=check(min=1, max=16384))
    resample: str = field(default="bilinear", metadata=check(choices=("nearest", "bilinear", "bicubic", "lanczos")))
    rescale_factor: float = field(default=1 / 255, metadata=check(min=0))
    mean: tuple[float, ...] = field(default=(0.0, 0.0, 0.0), metadata=check(nonempty=True))
    std: tuple[float, ...] = field(default=(1.0, 1.0, 1.0), metadata=check(nonempty=True))
    channel_order: str = field(default="rgb", metadata=check(choices=("rgb", "bgr")))
    layout: str = field(default="NCHW", metadata=check(choices=("NCHW", "NHWC")))

    def __post_init__(self):
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(f"{name} has {len(getattr(self, name))} values; the model has {self.channels} "
                                 "channel(s)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std {list(self.std)} must be positive")


@dataclass(frozen=True)
class Budget:
    cosine_mean: float = field(metadata=check(min=0, max=1))
    cosine_min: float = field(metadata=check(min=0, max=1))
    top1_agreement_min: float = field(metadata=check(min=0, max=1))


@dataclass(frozen=True)
class FidelityInfo:
    n: int = field(metadata=check(min=1))
    cosine_mean: float = field(metadata=check(min=-1.0001, max=1.0001))
    cosine_min: float = field(metadata=check(min=-1.0001, max=1.0001))
    cosine_p01: float = field(metadata=check(min=-1.0001, max=1.0001))
    max_abs_error: float = field(metadata=check(min=0))
    reference: str
    budget: Budget
    top1_agreement: float | None = field(default=None, metadata=check(min=0, max=1))
    attempts: JSON = field(default_factory=list)
    per_length: JSON = field(default_factory=dict)  # artefacts compiled for fixed lengths: each length's fidelity


@dataclass(frozen=True)
class GoldenCase:
    """Golden inputs and outputs at one sequence length of an artefact compiled for fixed lengths; with batch > 1,
    exactly that many rows, so the [batch, length] signature is the one that runs them."""

    length: int = field(metadata=check(min=1, max=MAX_DIM))
    inputs: str = field(metadata=check(pattern=RELPATH))
    expected: str = field(metadata=check(pattern=RELPATH))
    batch: int = field(default=1, metadata=check(min=1, max=MAX_DIM))


@dataclass(frozen=True)
class GoldenInfo:
    inputs: str = field(metadata=check(pattern=RELPATH))
    expected: str = field(metadata=check(pattern=RELPATH))
    texts: str | None = field(default=None, metadata=check(pattern=RELPATH))  # text bundles: the golden texts
    per_length: tuple[GoldenCase, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    metric: str
    value: float
    rows: int = field(metadata=check(min=1))
    data: str


@dataclass(frozen=True)
class MemoryRow:
    weights_mb: float
    activations_mb: float
    workspace_mb: float
    total_mb: float
    fits: bool | None


@dataclass(frozen=True)
class MemoryPlan:
    shape: tuple[int, int] = field(metadata=check(min=1))
    budget_mb: int = field(metadata=check(min=0))
    shared_with_cpu: bool
    per_precision: dict[str, MemoryRow]


@dataclass(frozen=True)
class FileEntry:
    bytes: int = field(metadata=check(min=0))
    sha256: str = field(metadata=check(pattern=SHA256))


@dataclass(frozen=True)
class Manifest:
    format_version: int
    edgesdk_version: str
    created: str
    model: ModelInfo
    target: TargetInfo
    precision: str = field(metadata=check(choices=PRECISIONS))
    quantization: Quantization
    artefact: ArtefactInfo
    inputs: tuple[TensorSpec, ...] = field(metadata=check(nonempty=True))
    outputs: tuple[TensorSpec, ...] = field(metadata=check(nonempty=True))
    tokenizer: TokenizerInfo | None = None  # text family
    preprocessing: ImageInfo | None = None  # image family
    fidelity: FidelityInfo | None = None
    golden: GoldenInfo | None = None
    evaluation: Evaluation | None = None
    memory_plan: MemoryPlan | None = None
    versions: dict[str, str] = field(default_factory=dict)
    runtime_requirements: tuple[str, ...] = ()
    machine: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    manifest_sha256: str = ""

    def __post_init__(self):
        family = self.model.family
        if family == "text" and self.tokenizer is None:
            raise ValueError("a text model's manifest needs its 'tokenizer' section")
        if family == "image" and self.preprocessing is None:
            raise ValueError("an image model's manifest needs its 'preprocessing' section")
        if family != "text" and self.tokenizer is not None or family != "image" and self.preprocessing is not None:
            raise ValueError(f"model.family is '{family}': 'tokenizer' belongs to text and 'preprocessing' to image "
                             "models only")

    def to_json(self) -> dict[str, Any]:
        return encode(self)

    def digest(self) -> str:
        return manifest_digest(self.to_json())

    def sealed(self, files: dict[str, FileEntry]) -> "Manifest":
        """This manifest with its file table and self-hash: what `edgesdk.bundle.finalize` writes."""
        body = replace(self, format_version=FORMAT_VERSION, files=files, manifest_sha256="")
        return replace(body, manifest_sha256=body.digest())

    def referenced_files(self) -> list[str]:
        """Every file this manifest points at: all must be in its file table."""
        named = [self.artefact.entry, *self.artefact.files, *([self.tokenizer.path] if self.tokenizer else [])]
        if self.golden is not None:
            named += [self.golden.inputs, self.golden.expected, *([self.golden.texts] if self.golden.texts else [])]
            named += [p for case in self.golden.per_length for p in (case.inputs, case.expected)]
        return named


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
    """A bundle on disk: its folder, its typed manifest, and its backend's typed target settings."""

    path: Path
    manifest: Manifest
    settings: Any

    def file(self, relative: str) -> Path:
        """A file of the bundle; the manifest's paths are validated relative paths, and symlinks are refused."""
        target = self.path / relative
        for part in (target, *target.parents):
            if part == self.path:
                break
            if part.is_symlink():
                raise BundleError(f"bundle '{self.path}': '{relative}' goes through a symlink; a bundle holds "
                                  "plain files only. Re-export it.")
        return target

    @property
    def backend(self) -> str:
        return self.manifest.target.backend

    @property
    def artefact(self) -> Path:
        return self.file(self.manifest.artefact.entry)


def open_bundle(path: Path, manifest: Manifest) -> Bundle:
    """A Bundle over a folder and a manifest already in hand (the exporter's staged bundle): settings decoded."""
    from .registry import runtime_backend

    backend = runtime_backend(manifest.target.backend)
    settings = decode(backend.settings, manifest.target.settings, BundleError, "target.settings",
                      f"{path / MANIFEST}: ")
    return Bundle(path, manifest, settings)


def read_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Open a bundle folder: size cap, format version, field-by-field validation, self-hash, paths, file hashes."""
    root = Path(path)
    refuse_unfinished(root)  # an interrupted export's staging folder is never a bundle
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle '{root}' is not a folder. Pass the folder `edgesdk export` wrote "
                          "(e.g. dist/all-minilm-l6-v2-intel-int8).")
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise BundleError(f"bundle '{root}' has no {MANIFEST}: it is not an edgesdk bundle or it is incomplete. "
                          "Re-export it with `edgesdk export`.")
    data = _load_json(manifest_path)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle '{root}' has format_version {version!r}; this edgesdk reads {FORMAT_VERSION}. "
                          "Re-export the bundle with this edgesdk version, or install the edgesdk that wrote it.")
    manifest = decode(Manifest, data, BundleError, context=f"{manifest_path}: ")
    if manifest.manifest_sha256 != manifest_digest(data):
        raise BundleError(f"{manifest_path} was modified after export (its self-hash does not match). "
                          "A bundle is read-only: re-export it instead of editing the manifest.")
    _check_paths(root, manifest)
    if verify_hashes:
        verify_files(root, manifest)
    return open_bundle(root, manifest)


def _load_json(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes. The bundle is "
                          "damaged or not an edgesdk bundle; re-export it.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged. Re-export it.") from exc
    except RecursionError:
        raise BundleError(f"{path} is nested too deeply to be a manifest; the bundle is damaged. Re-export it.") \
            from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object; the bundle is damaged. Re-export it.")
    return data


def _check_paths(root: Path, manifest: Manifest) -> None:
    import re

    from .registry import runtime_backend

    bad = [p for p in manifest.files if not re.fullmatch(RELPATH, p)]
    if bad:
        raise BundleError(f"bundle '{root}': file table entry '{bad[0]}' is not a plain relative path inside the "
                          "bundle; the manifest was tampered with. Re-export it.")
    unlisted = sorted(set(manifest.referenced_files()) - set(manifest.files))
    if unlisted:
        raise BundleError(f"bundle '{root}': the manifest names '{unlisted[0]}' but its file table does not list it "
                          "(so its hash is unchecked); the bundle was tampered with. Re-export it.")
    caches = runtime_backend(manifest.target.backend).caches
    for item in sorted(root.rglob("*")):
        rel = item.relative_to(root).as_posix()
        if item.is_symlink():
            raise BundleError(f"bundle '{root}' holds a symlink '{rel}'; a bundle holds plain files only. "
                              "Re-export it.")
        if item.is_dir() or rel in (MANIFEST, SIGNATURES, INCOMPLETE) or rel in manifest.files \
                or item.name in HARMLESS:  # INCOMPLETE: refuse_unfinished() decided already
            continue
        if any(rel == c or rel.startswith(c + "/") for c in caches):
            continue
        raise BundleError(f"bundle '{root}' holds '{rel}', which its manifest does not list; a bundle carries only "
                          "the files it was exported with. Remove the file or re-export the bundle.")


def verify_files(root: Path, manifest: Manifest) -> None:
    problems = []
    for relative, meta in sorted(manifest.files.items()):
        target = root / relative
        if not target.is_file():
            problems.append(f"missing: {relative}")
        elif target.stat().st_size != meta.bytes:
            problems.append(f"size changed: {relative} ({target.stat().st_size} bytes, manifest says {meta.bytes})")
        elif sha256_file(target) != meta.sha256:
            problems.append(f"content changed: {relative} (sha256 differs)")
    if problems:
        raise BundleError(f"bundle '{root}' failed verification: " + "; ".join(problems)
                          + ". The bundle was modified or damaged; re-export it.")
