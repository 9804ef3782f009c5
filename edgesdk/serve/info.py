"""Everything serving reads from a bundle's manifest, in one place.

The HTTP server, the Ray Serve app and the Triton repository writer take their facts about a bundle (model name,
task, dimensions, max length, labels, prompts, file names) only from `bundle_info()`, so a change to the manifest's
shape is adapted here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def bundle_info(source: Any) -> dict[str, Any]:
    """Facts about a bundle for serving: from a Runner (`runner.bundle`) or a Bundle (`read_bundle()`)."""
    bundle = getattr(source, "bundle", source)
    m = bundle.manifest
    model, target, tokenizer = m.model, m.target, m.tokenizer
    if tokenizer is None:
        from ..errors import BundleError

        raise BundleError(f"bundle '{bundle.path}' holds a{'n' if model.family == 'image' else ''} {model.family} "
                          "model; `edgesdk serve` serves text bundles today. Embed the runner "
                          "(edgesdk.runtime.load(...).classify(images) / run(feeds)) in your service instead.")
    task = model.task
    out_shape = list(m.outputs[0].shape)
    labels = [str(label) for label in model.labels]
    engines = sorted(str(p.relative_to(bundle.path)) for p in Path(bundle.path).glob("engines/*/model.plan"))
    return {
        "model": model.name,
        "bundle": Path(bundle.path).name,
        "task": task,
        "target": target.name,
        "backend": target.backend,
        "precision": m.precision,
        "dimensions": int(out_shape[-1]) if task == "embedding" else None,
        "num_labels": len(labels) if task == "classification" else None,
        "labels": labels,
        "max_length": tokenizer.max_length,
        "static_length": tokenizer.static_length,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "prompts": dict(model.prompts),
        "bundle_sha256": m.manifest_sha256,
        "edgesdk_version": m.edgesdk_version,
        # file-level facts for the Triton writer
        "path": str(bundle.path),
        "tokenizer_path": str(Path(bundle.path) / tokenizer.path),
        "tokenizer_dir": str((Path(bundle.path) / tokenizer.path).parent),
        "pad_id": tokenizer.pad_id,
        "pad_token": tokenizer.pad_token,
        "artefact_format": m.artefact.format,
        "artefact_entry": m.artefact.entry,
        "artefact_files": list(m.artefact.files),
        "engines": engines,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in m.inputs],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in m.outputs],
    }


PUBLIC = ("model", "bundle", "task", "target", "backend", "precision", "dimensions", "num_labels", "labels",
          "max_length", "pooling", "normalize", "prompts", "bundle_sha256", "edgesdk_version")


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """What GET /info shows (no file paths)."""
    return {key: info[key] for key in PUBLIC}
