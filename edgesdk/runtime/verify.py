"""`edgesdk verify` on the device: hashes, then the golden inputs re-run and compared with what export recorded.

Two comparisons: against the artefact's own outputs at export time (catches a broken runtime or a bad port;
integer kernels differ slightly across CPUs, so the bar is cosine ≥ 0.999), and against the FP32 reference
(the fidelity budget the bundle was exported under).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BundleError
from .runner import load

SELF_CONSISTENCY = 0.999


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)


@dataclass
class VerifyResult:
    bundle: str
    hashes_ok: bool
    cosine_vs_export_min: float
    cosine_vs_fp32_min: float
    fp32_budget_min: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def verify_bundle(path: str | Path, threads: int | None = None) -> VerifyResult:
    """Raises BundleError on a hash mismatch; otherwise re-runs the golden inputs and returns the comparison."""
    with load(path, threads) as runner:
        golden, fid = runner.manifest.golden, runner.manifest.fidelity
        if golden is None or fid is None:
            raise BundleError(f"bundle '{path}' has no golden I/O or fidelity record, so it cannot check itself; "
                              "re-export it with `edgesdk export`.")
        vs_export, vs_fp32 = 1.0, 1.0
        cases = [(golden.inputs, golden.expected), *((c.inputs, c.expected) for c in golden.per_length)]
        for inputs, expected_file in cases:  # the natural padding, then each compiled length
            export_min, fp32_min = _compare(runner, path, inputs, expected_file)
            vs_export, vs_fp32 = min(vs_export, export_min), min(vs_fp32, fp32_min)
        budget = fid.budget.cosine_min
        # classifiers: the FP32 budget is top-1 agreement over the export's held-out set, not a per-text cosine
        # (four golden texts near a decision boundary would swing it); the self-consistency check still applies
        fp32_ok = vs_fp32 >= budget or runner.task == "classification"
        return VerifyResult(str(path), True, round(vs_export, 6), round(vs_fp32, 6), budget,
                            vs_export >= SELF_CONSISTENCY and fp32_ok)


def _compare(runner, path, inputs: str, expected_file: str) -> tuple[float, float]:
    """(min cosine vs the export-time outputs, min cosine vs the FP32 reference) of one golden case."""
    feeds = _load_npz(runner.bundle.file(inputs), path)
    expected = _load_npz(runner.bundle.file(expected_file), path)
    if not {"artefact", "reference"} <= expected.keys():
        raise BundleError(f"bundle '{path}': {expected_file} lacks the 'artefact' and 'reference' arrays; re-export it.")
    got = runner.postprocess(feeds, runner.run(feeds)[runner.outputs[0].name])
    if got.shape != expected["artefact"].shape or got.shape != expected["reference"].shape:
        raise BundleError(f"bundle '{path}': golden outputs in {expected_file} have shape {expected['artefact'].shape}, "
                          f"the bundle gives {got.shape}; re-export it.")
    return float(cosine_rows(got, expected["artefact"]).min()), float(cosine_rows(got, expected["reference"]).min())


def _load_npz(path: Path, bundle: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a golden .npz, never pickled objects (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"bundle '{bundle}': cannot read {path.name} ({exc}); re-export it.") from exc
