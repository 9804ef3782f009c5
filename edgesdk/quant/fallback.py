"""The fidelity-driven loop around a quantized build: measure in the real runtime, keep what misses in float.

`build(keep_float)` materialises and measures one artefact (the caller runs it in its real runtime). While the
profile's budget is missed, the layers ranked most sensitive (measured, see sensitivity.py) are returned to float
— 1, 2, 4, 8, ... of them — and the build is repeated. Every attempt is recorded for the manifest. If the budget
cannot be met even with every ranked layer in float, FidelityError names the best fidelity reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import FidelityError

TargetProfile = Any  # edgesdk.profiles.TargetProfile (profiles sits above quant: no import back)

log = logging.getLogger("edgesdk")


@dataclass
class FallbackResult:
    staging: Path
    artefact: Any
    fidelity: Any
    kept_in_float: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


def schedule(n_layers: int) -> list[int]:
    """How many of the ranked layers each retry keeps in float: 1, 2, 4, ... then all of them."""
    counts, k = [], 1
    while k < n_layers:
        counts.append(k)
        k *= 2
    return counts + [n_layers] if n_layers else []


PATIENCE = 2  # attempts in a row without a gain before the loop stops
MIN_GAIN = 1e-4  # a gain smaller than this (in the worst-case metric) is noise, not progress


def describe_budget(budget, fid) -> str:
    if fid.top1_agreement is not None:
        return f"top-1 agreement ≥ {budget.top1_agreement_min}"
    return f"cosine mean ≥ {budget.cosine_mean}, min ≥ {budget.cosine_min}"


def run_with_fallback(build: Callable, profile: TargetProfile, rank: Callable[[], list],
                      discard: Callable[[Path], None]) -> FallbackResult:
    budget = profile.fidelity
    staging, artefact, fid = build(())
    attempts = [dict(fid.to_dict(), kept_in_float=0)]
    if fid.meets(budget):
        return FallbackResult(staging, artefact, fid, [], attempts)
    discard(staging)
    best = first = fid
    ranking = rank()
    log.info("fidelity (%s) misses the budget (%s): ranked %d layers by measured sensitivity, retrying",
             fid.describe(), describe_budget(budget, fid), len(ranking))
    stalled, stop = 0, ""
    for count in schedule(len(ranking)):
        kept = ranking[:count]
        staging, artefact, fid = build(tuple(layer.node for layer in kept))
        attempts.append(dict(fid.to_dict(), kept_in_float=count))
        log.info("  %d layer(s) in float → %s", count, fid.describe())
        if fid.meets(budget):
            reason = f"budget {describe_budget(budget, fid)} missed with all layers in int8 ({first.describe()})"
            kept_info = [{"node": layer.node, "rank": i + 1, "added_error": layer.added_error, "reason": reason}
                         for i, layer in enumerate(kept)]
            return FallbackResult(staging, artefact, fid, kept_info, attempts)
        discard(staging)
        gained = fid.rank()[0] - best.rank()[0] >= MIN_GAIN or (
            fid.rank()[0] >= best.rank()[0] and fid.rank()[1] - best.rank()[1] >= MIN_GAIN)
        best = fid if fid.rank() > best.rank() else best
        stalled = 0 if gained else stalled + 1
        if stalled >= PATIENCE:
            stop = (f" The loop stopped early: {PATIENCE} attempts in a row (up to {count} layers in float) gained "
                    f"nothing, so the error is not in the layers this backend can hold back.")
            log.info("  stopping: %d attempts without a gain", PATIENCE)
            break
    raise FidelityError(attempts=attempts, message=
        f"target '{profile.name}': the fidelity budget ({describe_budget(budget, best)}) cannot be met: the best "
        f"reached was {best.describe()} after {len(attempts)} attempts, the last with {attempts[-1]['kept_in_float']} "
        f"layers in float.{stop} Loosen [fidelity] in the profile, give more representative --calibration data, "
        "or export fp16/fp32.")
