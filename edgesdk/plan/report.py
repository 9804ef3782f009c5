"""Rendering a Plan or a CheckResult: a readable table for the terminal and the stable JSON (schema edgesdk.plan/1).

The JSON keys are documented in docs/plan.md; every size is in bytes. New keys may be added within schema 1;
renaming or removing one bumps the schema.
"""

from __future__ import annotations

from ..memory.estimate import MB
from .planner import CheckResult, Plan

SCHEMA = "edgesdk.plan/1"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MB:.1f}"


def plan_dict(plan: Plan) -> dict:
    p = plan.profile
    return {"schema": SCHEMA, "mode": "plan",
            "model": {"path": plan.model, "format": plan.model_format},
            "target": {"name": p.name, "backend": p.backend, "device": p.device.device,
                       "precisions": list(p.precisions), "budget_bytes": p.memory.budget_mb * MB,
                       "shared_with_cpu": p.memory.shared_with_cpu, "note": p.memory.note,
                       "workspace_bytes": getattr(p.device, "workspace_mb", 0) * MB, "max_seq": p.shapes.max_seq},
            "batch": plan.batch, "seq": plan.seq, "runtime_model": plan.runtime.to_dict(),
            "precisions": [e.to_dict() for e in plan.estimates],
            "recommendation": plan.advice.to_dict() if plan.advice else None}


def check_dict(result: CheckResult) -> dict:
    m = result.measured
    return {"schema": SCHEMA, "mode": "check", "bundle": result.bundle, "backend": result.backend,
            "precision": result.precision, "batch": m.batch, "seq": m.seq, "runtime_model": result.runtime.to_dict(),
            "estimate": result.estimate.to_dict(), "measured": m.to_dict(),
            "error_pct": round(result.error_pct, 1)}


def plan_text(plan: Plan) -> str:
    p = plan.profile
    budget = f"{p.memory.budget_mb} MB" if p.memory.budget_mb else "unknown"
    shared = " (shared with the CPU: the OS and the app use part of it)" if p.memory.shared_with_cpu else ""
    lines = [f"model    {plan.model} ({plan.model_format})",
             f"target   {p.name}: {p.backend} on {p.device.device}; budget {budget}{shared}; "
             f"workspace {getattr(p.device, 'workspace_mb', 0)} MB",
             f"shape    batch {plan.batch} x seq {plan.seq}; runtime model: {plan.runtime.note}", ""]
    head = (f"{'prec':5} {'embed':>7} {'matmul':>7} {'other':>7} {'copies':>7} {'activ':>8} {'work+rt':>8} "
            f"{'total MB':>9} {'fits':>5} {'max batch':>9} {'max seq':>8}")
    lines += [head, "-" * len(head)]
    for e in plan.estimates:
        if not e.supported:
            lines.append(f"{e.precision:5} {e.note}")
            continue
        w = e.weights
        fits = "-" if e.fits is None else ("yes" if e.fits else "NO")
        lines.append(f"{e.precision:5} {_mb(w.embeddings):>7} {_mb(w.matmul):>7} {_mb(w.other + w.quant_params):>7} "
                     f"{_mb(e.runtime_copies):>7} {_mb(e.activations + e.inputs):>8} "
                     f"{_mb(e.workspace + e.overhead):>8} {_mb(e.total):>9} {fits:>5} "
                     f"{e.max_batch if e.max_batch is not None else '-':>9} "
                     f"{e.max_seq if e.max_seq is not None else '-':>8}")
    notes = [f"  {e.precision}: {e.note}" for e in plan.estimates if e.supported and e.note]
    if notes:
        lines += ["notes"] + notes
    lines.append(f"activation peak at {plan.estimates[0].peak_op or '-'}; max seq is memory-limited only "
                 f"(the profile allows up to {p.shapes.max_seq}; the model's position table may allow less)")
    if plan.advice:
        a = plan.advice
        lines += ["", f"recommendation: {a.strategy} ({a.precision})"] + [f"  - {r}" for r in a.reasons]
    return "\n".join(lines)


def check_text(result: CheckResult) -> str:
    e, m = result.estimate, result.measured
    return "\n".join([
        f"bundle     {result.bundle} ({result.backend} {result.precision}), batch {m.batch} x seq {m.seq}, "
        f"{m.runs} runs, {m.threads} thread(s)",
        f"estimate   weights {_mb(e.weights.total)} + runtime copies {_mb(e.runtime_copies)} + activations "
        f"{_mb(e.activations)} + inputs {_mb(e.inputs)} + runtime overhead {_mb(e.overhead)} = {_mb(e.total)} MB",
        f"measured   idle {_mb(m.rss_idle)} MB, after load {_mb(m.rss_after_load)} MB, peak {_mb(m.peak)} MB "
        f"-> increase {_mb(m.increase)} MB (load alone {_mb(m.load_increase)} MB)",
        f"error      {result.error_pct:+.1f} % (estimate vs measured increase)",
        f"runtime    {m.runtime_reported or 'no runtime-reported memory'}"])
