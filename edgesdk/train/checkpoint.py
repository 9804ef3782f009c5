"""Training checkpoints without pickle: tensors in safetensors, everything else in a JSON sidecar.

A checkpoint lives in the user's output folder (`OUT/models/.NAME.checkpoint.*`), so anyone who can write there
could plant one. Unpickling such a file (torch.load without weights_only) runs arbitrary code; safetensors and JSON cannot.
The pair is written atomically: tensors first, then the sidecar, which records the tensors file's sha256, so a
checkpoint interrupted between the two renames (or mixed by hand) is noticed and ignored rather than half-loaded.
A legacy pickle checkpoint (`.pt`) beside it is never opened: it is ignored with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

log = logging.getLogger("edgesdk")
FORMAT = "edgesdk-train-checkpoint/1"
SUFFIX = ".safetensors"


def checkpoint_path(out_dir: Path) -> Path:
    """Where the training loop checkpoints the model that will be saved to `out_dir`."""
    return out_dir.with_name(f".{out_dir.name}.checkpoint{SUFFIX}")


def sidecar(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def remove(checkpoint: Path) -> None:
    for path in (checkpoint, sidecar(checkpoint), checkpoint.with_suffix(".pt")):
        path.unlink(missing_ok=True)


def save(checkpoint: Path, *, model, optimizer, schedule, fingerprint: str, step: int, losses: list[float]) -> None:
    import torch
    from safetensors.torch import save_file

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state '{name}' is a {type(value).__name__}, not a tensor")
        tensors[f"model/{name}"] = value
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                opt_scalars.setdefault(str(index), {})[key] = value
    # clone: safetensors refuses tensors that share storage (tied weights), and wants them contiguous on the CPU
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    save_file(tensors, str(partial))
    _fsync(partial)
    os.replace(partial, checkpoint)
    version, internal, gauss = random.getstate()
    meta = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "losses": losses,
            "tensors_sha256": _sha256(checkpoint), "optimizer_param_groups": opt["param_groups"],
            "optimizer_scalars": opt_scalars, "schedule": _jsonable(schedule.state_dict()),
            "random": [version, list(internal), gauss], "torch_rng": torch.get_rng_state().tolist()}
    side = sidecar(checkpoint)
    partial = side.with_name(side.name + ".partial")
    partial.write_text(json.dumps(meta), encoding="utf-8")
    _fsync(partial)
    os.replace(partial, side)


def load(checkpoint: Path, *, model, optimizer, schedule, fingerprint: str) -> tuple[int, list[float]] | None:
    """Restore a checkpoint; None when there is none usable. A different fingerprint is returned as-is for the
    caller to refuse (the settings changed); a damaged or mismatched pair is ignored with a log line."""
    import torch
    from safetensors.torch import load_file

    legacy = checkpoint.with_suffix(".pt")
    if legacy.exists():
        log.warning("ignoring %s: a pickle checkpoint is never loaded (unpickling can run code); "
                    "training checkpoints are %s + .json now", legacy, SUFFIX)
    side = sidecar(checkpoint)
    if not checkpoint.is_file() or not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        if meta.get("fingerprint") != fingerprint:
            raise FingerprintMismatch(str(meta.get("fingerprint")))
        if meta.get("tensors_sha256") != _sha256(checkpoint):
            raise ValueError(f"{checkpoint.name} does not match the sha256 its sidecar records")
        tensors = load_file(str(checkpoint), device=str(next(model.parameters()).device))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in meta["optimizer_scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
        schedule.load_state_dict(meta["schedule"])
        version, internal, gauss = meta["random"]
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    except FingerprintMismatch:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("ignoring checkpoint %s (%s); training starts from step 0", checkpoint, exc)
        return None
    log.info("resuming from %s at step %d", checkpoint, meta["step"])
    return int(meta["step"]), [float(x) for x in meta["losses"]]


class FingerprintMismatch(Exception):
    """The checkpoint was written under other training settings."""


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} in a scheduler state cannot be checkpointed as JSON")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
