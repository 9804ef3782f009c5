"""The advisor's measured PTQ trial: a quick int8 export through `edgesdk.api` (real runtime, real fallback loop).

It sits above the export pipeline (it calls `export()`), so nothing the pipeline imports may import it: the
`edgesdk plan --trial` command runs it and hands the Trial to the advisor (plan/advise.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import FidelityError
from ..profiles import TargetProfile
from .advise import Trial


def run_trial(profile: TargetProfile, model: str | None, samples: int) -> Trial:
    """A quick PTQ at int8 through edgesdk's export (real runtime, real fallback loop) into a temp folder."""
    from ..api import ExportOptions, export
    from ..backends import backends
    from ..quant import QuantOverrides

    proxy = "" if profile.backend in backends() else "onnxruntime"
    with tempfile.TemporaryDirectory(prefix="edgesdk-trial-") as tmp:
        target = _proxy_profile(profile, Path(tmp)) if proxy else profile.reference
        options = ExportOptions(targets=(str(target),), model=model, out=str(Path(tmp) / "dist"),
                                precisions=("int8",), quant=QuantOverrides(samples=samples),
                                fidelity_samples=64, progress=False)
        try:
            result = export(options)
        except FidelityError as exc:
            return Trial(False, proxy, samples, None, None, 0, str(exc))
    bundle = result.bundles[0]
    return Trial(True, proxy, samples, bundle.fidelity["cosine_mean"], bundle.fidelity["cosine_min"],
                 len(bundle.kept_in_float), "")


def _proxy_profile(profile: TargetProfile, work: Path) -> Path:
    """The target's [quant] and [fidelity] on an ONNX Runtime CPU profile."""
    def table(name, values):
        return [f"[{name}]"] + [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}"
                                for k, v in values.items()]

    quant = {k: v for k, v in asdict(profile.quant).items()}
    lines = [f'name = "{profile.name}-proxy"', 'backend = "onnxruntime"', 'precisions = ["int8", "fp32"]',
             'default_precisions = ["int8"]', *table("quant", quant), *table("fidelity", asdict(profile.fidelity))]
    path = work / f"{profile.name}-proxy.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
