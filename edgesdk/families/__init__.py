"""Model families: what is specific to a kind of model — text encoders, image models, raw-tensor models.

A family knows its inputs: how the pipeline makes held-out, calibration and golden feeds from the user's data
(texts, image folders, .npz tensors), which manifest section tells the runner how to make feeds on the device
(`tokenizer` for text, `preprocessing` for images) and which files travel with the bundle. The pipeline asks the
family of a `SourceModel` (`source.family.export_inputs(source, data)`) and never assumes a model kind itself;
converters ask it for the model rewrites they need (e.g. BERT's finite attention mask for TFLite, text.py).
Each family module has NAME, NNCF_MODEL_TYPE and export_inputs().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputData:
    """The user's data for one export: calibration and fidelity sources (paths, or None for the defaults)."""

    calibration: str | None = None
    fidelity_data: str | None = None
    fidelity_samples: int = 512


@dataclass
class FamilyInputs:
    """What the pipeline feeds a model of one family, made once per export."""

    encode: Callable[[list], Feeds]  # items (texts, images, tensor rows) → one batch of feeds
    heldout: list  # the held-out items fidelity is measured on
    heldout_source: str
    golden: list  # the items whose outputs the bundle records as golden I/O
    calibration_items: Callable[[int], tuple[list, str]]  # samples → (items, where they came from)
    sections: dict[str, Any]  # manifest sections: {"tokenizer": {...}} or {"preprocessing": {...}}
    payload: Callable[[Path], None] = lambda staging: None  # files the bundle carries (e.g. the tokenizer)
    notes: list[str] = field(default_factory=list)  # what the report should say about the data (e.g. synthetic)

    def batches(self, items: list, size: int = 16) -> list[Feeds]:
        return [self.encode(items[i:i + size]) for i in range(0, len(items), size)]
