"""Caching ai-edge-quantizer's calibration result inside one export, without pickle.

The result is `{tensor name: {"min": ndarray, "max": ndarray, ...}}` (min-max calibration). It is cached in the
export's own temp folder so the fallback loop's rebuilds do not recalibrate; it is stored as an `.npz` of plain
arrays plus a JSON index, read back with `allow_pickle=False`, so nothing planted in that folder can run code.
A result holding anything but arrays and numbers (another calibration mode) is kept in memory only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "__index__"
_memory: dict[str, Any] = {}  # path → result, for results that are not plain arrays (this process only)


def load(path: Path) -> Any | None:
    if str(path) in _memory:
        return _memory[str(path)]
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        index = json.loads(bytes(data[INDEX]).decode("utf-8"))
        result: dict[str, dict[str, Any]] = {}
        for tensor, key, slot, scalar in index:
            value = data[str(slot)]
            result.setdefault(tensor, {})[key] = value.item() if scalar else value
    return result


def save(path: Path, result: Any) -> None:
    arrays, index = _flatten(result)
    if arrays is None:
        _memory[str(path)] = result
        return
    partial = path.with_name(path.name + ".partial.npz")
    arrays[INDEX] = np.frombuffer(json.dumps(index).encode("utf-8"), dtype=np.uint8)
    np.savez(partial, **arrays)
    partial.replace(path)


def _flatten(result: Any) -> tuple[dict[str, np.ndarray] | None, list]:
    arrays: dict[str, np.ndarray] = {}
    index = []
    if not isinstance(result, dict):
        return None, []
    for tensor, qsv in result.items():
        if not isinstance(tensor, str) or not isinstance(qsv, dict):
            return None, []
        for key, value in qsv.items():
            scalar = isinstance(value, (bool, int, float, np.generic))
            if not isinstance(key, str) or not (scalar or (isinstance(value, np.ndarray) and value.dtype != object)):
                return None, []
            slot = str(len(arrays))
            arrays[slot] = np.asarray(value)
            index.append([tensor, key, slot, scalar])
    return arrays, index
