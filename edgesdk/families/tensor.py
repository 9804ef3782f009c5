"""The tensor family: models fed raw named tensors (an MLP over features, any nn.Module or ONNX file that is not
text or an image). The runner takes `run(feeds)`; the manifest's `inputs` say names, dtypes and shapes.

Data: --calibration FILE.npz and --fidelity-data FILE.npz hold one array per input name (a lone array serves a
one-input model), rows on axis 0; read with allow_pickle=False. Without them, float inputs get seeded N(0, 1) rows
and integer inputs zeros: a conversion check the report labels as synthetic, never a fidelity claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

NAME = "tensor"
NNCF_MODEL_TYPE = None
SYNTHETIC = 64


def read_rows(path: str | Path, specs: list[dict], flag: str) -> list[dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        raise InputError(f"{flag} '{path}' is not an .npz file; for a tensor model pass np.savez(FILE, "
                         f"{', '.join(s['name'] + '=rows' for s in specs)}) with rows on axis 0.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{flag} '{path}' cannot be read as .npz ({exc}); save it with numpy.savez.") from None
    if len(specs) == 1 and len(arrays) == 1:
        arrays = {specs[0]["name"]: next(iter(arrays.values()))}
    missing = [s["name"] for s in specs if s["name"] not in arrays]
    if missing:
        raise InputError(f"{flag} '{path}' has arrays {sorted(arrays)}; the model takes {[s['name'] for s in specs]} "
                         f"(missing {missing}).")
    rows = None
    for spec in specs:
        array = arrays[spec["name"]]
        want = tuple(spec["shape"][1:])
        if array.ndim != len(spec["shape"]) or tuple(array.shape[1:]) != want:
            raise InputError(f"{flag} '{path}': array '{spec['name']}' has shape {list(array.shape)}; the model takes "
                             f"[rows, {', '.join(map(str, want))}].")
        if not np.isfinite(array.astype(np.float64)).all():
            raise InputError(f"{flag} '{path}': array '{spec['name']}' holds NaN or infinite values.")
        rows = len(array) if rows is None else min(rows, len(array))
    if not rows:
        raise InputError(f"{flag} '{path}' holds no rows.")
    return [{s["name"]: arrays[s["name"]][r].astype(s["dtype"]) for s in specs} for r in range(rows)]


def synthetic_rows(specs: list[dict], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{s["name"]: (rng.standard_normal(tuple(s["shape"][1:])).astype(s["dtype"])
                         if np.issubdtype(np.dtype(s["dtype"]), np.floating)
                         else np.zeros(tuple(s["shape"][1:]), s["dtype"])) for s in specs} for _ in range(count)]


def stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([item[name] for item in items]) for name in items[0]}


def export_inputs(source, data):
    from . import FamilyInputs

    specs, notes = source.inputs, []
    if data.fidelity_data:
        heldout = read_rows(data.fidelity_data, specs, "--fidelity-data")[: data.fidelity_samples]
        heldout_source = str(data.fidelity_data)
    else:
        heldout, heldout_source = synthetic_rows(specs, SYNTHETIC, 1), "synthetic N(0, 1) rows"
        notes.append("fidelity measured on synthetic N(0, 1) rows; pass --fidelity-data FILE.npz with real rows")

    def calibration_items(samples: int) -> tuple[list, str]:
        if data.calibration:
            return read_rows(data.calibration, specs, "--calibration")[:samples], str(data.calibration)
        notes.append("calibrated on synthetic N(0, 1) rows; pass --calibration FILE.npz with real rows")
        return synthetic_rows(specs, samples, 2), "synthetic N(0, 1) rows"

    return FamilyInputs(encode=stack, heldout=heldout, heldout_source=heldout_source, golden=heldout[:4],
                        calibration_items=calibration_items, sections={}, notes=notes)
