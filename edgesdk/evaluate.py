"""Fidelity (cosine / max error of pooled outputs vs the FP32 reference) and task metrics.

Export measures fidelity on held-out texts with the artefact running in its real runtime; `edgesdk eval`
adds task metrics on user data: STS-B Spearman, SST-2 accuracy, recall@k of nearest neighbours vs FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .runtime.verify import cosine_rows


@dataclass(frozen=True)
class Fidelity:
    n: int
    cosine_mean: float
    cosine_min: float
    cosine_p01: float
    max_abs_error: float
    reference: str

    def meets(self, mean: float, minimum: float) -> bool:
        return self.cosine_mean >= mean and self.cosine_min >= minimum

    def to_dict(self) -> dict:
        return asdict(self)


def fidelity(candidate: np.ndarray, reference: np.ndarray, reference_name: str) -> Fidelity:
    cos = cosine_rows(candidate, reference)
    return Fidelity(n=len(cos), cosine_mean=round(float(cos.mean()), 6), cosine_min=round(float(cos.min()), 6),
                    cosine_p01=round(float(np.percentile(cos, 1)), 6),
                    max_abs_error=round(float(np.abs(candidate - reference).max()), 6), reference=reference_name)
