"""`edgesdk verify` on the device: hashes, then the golden inputs re-run and compared with what export recorded.

Two comparisons: against the artefact's own outputs at export time (catches a broken runtime or a bad port;
integer kernels differ slightly across CPUs, so the bar is cosine ≥ 0.999), and against the FP32 reference
(the fidelity budget the bundle was exported under).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .runner import load
from .text import pool

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
        golden = runner.bundle.manifest["golden"]
        feeds = dict(np.load(runner.bundle.file(golden["inputs"])))
        expected = np.load(runner.bundle.file(golden["expected"]))
        raw = runner.run(feeds)[runner.outputs[0]["name"]]
        got = pool(raw, feeds["attention_mask"], runner.pooling, runner.normalize)
        vs_export = float(cosine_rows(got, expected["artefact"]).min())
        vs_fp32 = float(cosine_rows(got, expected["reference"]).min())
        budget = float(runner.manifest["fidelity"]["budget"]["cosine_min"])
        # classifiers: the FP32 budget is top-1 agreement over the export's held-out set, not a per-text cosine
        # (four golden texts near a decision boundary would swing it); the self-consistency check still applies
        fp32_ok = vs_fp32 >= budget or runner.task == "classification"
        return VerifyResult(str(path), True, round(vs_export, 6), round(vs_fp32, 6), budget,
                            vs_export >= SELF_CONSISTENCY and fp32_ok)
