"""The strategy advisor: the quantization strategy table made executable, with the reasons printed.

Inputs are the target's hardware (backend, int8 = 'int8' in profile.precisions, full-integer NPUs), the per-precision
memory estimates against the budget, the model size, and — with `--trial` — a measured PTQ run: edgesdk's own export
at int8 on a small calibration set, in the real runtime, through the fidelity fallback loop. A FidelityError there
means PTQ cannot meet the budget even with the most sensitive layers in float: the advice becomes QAT.
Targets whose backend does not export yet (TensorRT, TFLite) are trialled on ONNX Runtime with their own [quant] and
[fidelity] tables, as a proxy, and the advice says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..profiles import TargetProfile
from ..memory.estimate import MB, PrecisionEstimate

LARGE_MODEL_BYTES = 2 * 2**30  # ~500 M fp32 parameters: weight memory dominates, calibration is costly


@dataclass(frozen=True)
class Trial:
    ok: bool
    proxy: str  # "" or the backend the trial ran on instead of the target's
    samples: int
    cosine_mean: float | None
    cosine_min: float | None
    kept_in_float: int
    message: str


@dataclass(frozen=True)
class Advice:
    strategy: str  # ptq-static | ptq-dynamic | qat | fp16 | weight-only-int8 | weight-only-int4 | fp32 | reduce-shape
    precision: str
    reasons: tuple[str, ...]
    trial: Trial | None = None

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "precision": self.precision, "reasons": list(self.reasons),
                "trial": asdict(self.trial) if self.trial else None}


def advise(profile: TargetProfile, estimates: tuple[PrecisionEstimate, ...], trial: Trial | None = None) -> Advice:
    by = {e.precision: e for e in estimates if e.supported}
    fits = {p for p, e in by.items() if e.fits is not False}
    reasons: list[str] = []
    fp32 = by.get("fp32") or next(iter(by.values()), None)
    if fp32 is not None:
        share = fp32.activations / max(1, fp32.total)
        if share > 0.5:
            reasons.append(f"activations are {share:.0%} of the fp32 total at this batch × seq: quantizing weights "
                           "saves little; batch and sequence length drive memory here")
    if not fits:
        best = max(by.values(), key=lambda e: e.max_batch or 0, default=None)
        hint = f"; {best.precision} fits up to batch {best.max_batch}, seq {best.max_seq}" if best else ""
        return Advice("reduce-shape", best.precision if best else "", tuple(reasons + [
            f"no precision fits the {profile.memory.budget_mb} MB budget at this batch × seq{hint}"]), trial)
    if "int8" not in profile.precisions:
        choice = "fp16" if "fp16" in fits else "fp32"
        return Advice(choice, choice, tuple(reasons + [f"target '{profile.name}' has no int8 support"]), trial)
    strategy, reasons = _int8_strategy(profile, by, fits, reasons)
    if trial is not None:
        strategy, reasons = _apply_trial(strategy, trial, reasons)
    precision = {"fp16": "fp16", "weight-only-int4": "int4", "fp32": "fp32"}.get(strategy, "int8")
    return Advice(strategy, precision, tuple(reasons), trial)


def _int8_strategy(profile, by, fits, reasons):
    q, backend = profile.quant, profile.backend
    size = by["fp32"].weights.total if "fp32" in by else 0
    if "int8" not in fits:
        if "int4" in fits:
            return "weight-only-int4", reasons + ["only weight-only int4 fits the memory budget"]
        return ("fp16" if "fp16" in fits else "fp32"), reasons + ["int8 does not fit; a smaller float precision does"]
    if q.full_integer:
        return "ptq-static", reasons + [f"{profile.name}: NPU/NNAPI delegates need full-integer int8 "
                                        "(static activations calibrated, no float op on the main path)",
                                        "if PTQ misses the fidelity budget, QAT (run --trial to measure)"]
    if backend == "tensorrt":
        if "fp16" in fits:
            return "fp16", reasons + ["TensorRT fp16 needs no calibration and is near-lossless on tensor cores",
                                      "for more speed: PTQ static int8 with symmetric Q/DQ (zero-point 0); "
                                      "run --trial to see whether it holds the budget or needs QAT"]
        return "ptq-static", reasons + ["TensorRT int8 needs static, symmetric Q/DQ activations"]
    if size > LARGE_MODEL_BYTES:
        return "weight-only-int8", reasons + [f"weights are {size / MB:.0f} MB: memory is weight-bound; weight-only "
                                              "int8 needs no calibration and keeps fidelity"]
    reasons.append(f"{backend} on {profile.device.device} has int8 kernels: PTQ static is the fastest "
                   "(NNCF transformer preset; measured cosine 0.997 mean on MiniLM)")
    reasons.append("no calibration data? PTQ dynamic (ONNX Runtime, per-channel) or weight-only int8 (OpenVINO) "
                   "keep 4x smaller weights at near-fp32 fidelity")
    return "ptq-static", reasons


def _apply_trial(strategy, trial: Trial, reasons):
    where = f" (proxy: {trial.proxy})" if trial.proxy else ""
    if not trial.ok:
        return "qat", reasons + [f"PTQ trial on {trial.samples} samples{where} missed the budget even after the "
                                 f"fallback loop: {trial.message} → QAT"]
    kept = f", {trial.kept_in_float} layer(s) kept in float" if trial.kept_in_float else ""
    return ("ptq-static" if strategy in ("ptq-static", "fp16") else strategy), reasons + [
        f"PTQ trial on {trial.samples} samples{where}: cosine mean {trial.cosine_mean:.5f}, min "
        f"{trial.cosine_min:.5f}{kept} — meets the budget, no QAT needed"]
