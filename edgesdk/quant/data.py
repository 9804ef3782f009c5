"""Text sets for calibration and fidelity, and the calibration dataset built once per export.

Calibration texts come from the packaged set (varied English sentences, a few in other languages) or a user's
file: one text per line, or a TSV whose header names a text column (sentence, sentence1, sentence2, text).
The CalibrationSet tokenizes them once; every target and precision in the same export reuses it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError

TEXT_COLUMNS = ("sentence", "sentence1", "sentence2", "text")


@dataclass(frozen=True)
class TextSet:
    texts: tuple[str, ...]
    source: str


def packaged_texts(name: str) -> TextSet:
    """'calibration' or 'heldout': the sentence sets shipped with edgesdk."""
    text = (resources.files("edgesdk.quant") / "texts" / f"{name}.txt").read_text(encoding="utf-8")
    return TextSet(tuple(line for line in text.splitlines() if line.strip()), f"edgesdk:{name}.txt")


def load_texts(path: str | Path) -> TextSet:
    """Texts from a user file: one per line, or TSV with a header naming a text column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file '{path}' does not exist; pass a UTF-8 file with one text per line or a TSV.")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path}' is not UTF-8 ({exc.reason} at byte {exc.start}); "
                         f"convert it with: iconv -f LATIN1 -t UTF-8 {path} > fixed.txt") from exc
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"'{path}' holds no text; give at least one non-empty line.")
    header = lines[0].split("\t")
    columns = [i for i, name in enumerate(header) if name.strip().lower() in TEXT_COLUMNS]
    if "\t" in lines[0] and columns:
        texts = [row[i] for row in csv.reader(lines[1:], delimiter="\t", quoting=csv.QUOTE_NONE)
                 for i in columns if i < len(row) and row[i].strip()]
    elif "\t" in lines[0]:
        texts = [line.split("\t")[0] for line in lines if line.split("\t")[0].strip()]
    else:
        texts = lines
    if not texts:
        raise InputError(f"'{path}' has a header but no text rows.")
    return TextSet(tuple(texts), str(path))


def take(texts: TextSet, samples: int) -> list:
    """The first `samples` items of a set, or InputError naming the flag when it has fewer."""
    if samples > len(texts.texts):
        raise InputError(f"{samples} calibration samples were asked for but {texts.source} has only "
                         f"{len(texts.texts)} items; pass --calibration-samples {len(texts.texts)} or more data.")
    return list(texts.texts[:samples])


@dataclass
class CalibrationSet:
    """Tokenized calibration feeds (one dict per batch), made once and shared by every backend."""

    texts: TextSet  # the items (texts, image paths, tensor rows) and where they came from
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)
    static_length: int | None = None
    model_type: str | None = "TRANSFORMER"  # NNCF's model type for this family (None: a plain CNN / MLP)

    @classmethod
    def build(cls, texts: TextSet, encode, samples: int, batch_size: int = 1,
              static_length: int | None = None, model_type: str | None = "TRANSFORMER") -> "CalibrationSet":
        chosen = take(texts, samples)
        batches = [encode(chosen[i:i + batch_size]) for i in range(0, len(chosen), batch_size)]
        return cls(texts, batches, static_length, model_type)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.batches)
