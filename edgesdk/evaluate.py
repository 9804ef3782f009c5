"""Fidelity (cosine / max error of pooled outputs vs the FP32 reference) and task metrics.

Export measures fidelity on held-out texts with the artefact running in its real runtime; `edgesdk eval`
adds task metrics on user data: STS-B Spearman, SST-2 accuracy, recall@k of nearest neighbours vs FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .runtime.verify import cosine_rows


@dataclass(frozen=True)
class Fidelity:
    n: int
    cosine_mean: float
    cosine_min: float
    cosine_p01: float
    max_abs_error: float
    reference: str
    top1_agreement: float | None = None  # classifiers: share of texts whose predicted label matches FP32
    per_length: dict = field(default_factory=dict)  # fixed-length artefacts: each length's fidelity (this = worst)

    def meets(self, budget) -> bool:
        """Embeddings: cosine mean and min. Classifiers: top-1 agreement with the reference, what a user of the
        labels sees (the cosine of probability vectors is recorded but not budgeted: a confident 4-class model
        that keeps every label can sit at 0.987 while one flipped label moves agreement, not the mean)."""
        if self.top1_agreement is not None:
            return self.top1_agreement >= budget.top1_agreement_min
        return self.cosine_mean >= budget.cosine_mean and self.cosine_min >= budget.cosine_min

    def rank(self) -> tuple[float, float]:
        """Larger is better: what the fallback loop keeps as the best attempt."""
        worst = self.top1_agreement if self.top1_agreement is not None else self.cosine_min
        return worst, self.cosine_mean

    def describe(self) -> str:
        worst = f"top-1 agreement {self.top1_agreement:.4f}" if self.top1_agreement is not None \
            else f"min {self.cosine_min:.5f}"
        return f"cosine mean {self.cosine_mean:.5f}, {worst}"

    def to_dict(self) -> dict:
        return asdict(self)


def fidelity(candidate: np.ndarray, reference: np.ndarray, reference_name: str,
             classification: bool = False) -> Fidelity:
    """Row-wise cosine and max error; for classifiers the rows are class probabilities, plus top-1 agreement."""
    cos = cosine_rows(candidate, reference)
    agreement = round(float(np.mean(candidate.argmax(1) == reference.argmax(1))), 6) if classification else None
    return Fidelity(n=len(cos), cosine_mean=round(float(cos.mean()), 6), cosine_min=round(float(cos.min()), 6),
                    cosine_p01=round(float(np.percentile(cos, 1)), 6),
                    max_abs_error=round(float(np.abs(candidate - reference).max()), 6), reference=reference_name,
                    top1_agreement=agreement)


# -- task metrics on user data (`edgesdk eval`) ------------------------------------------------------------------

TASKS = ("stsb", "sst2", "cosine")


@dataclass(frozen=True)
class PairSet:
    first: tuple[str, ...]
    second: tuple[str, ...]
    scores: np.ndarray


@dataclass(frozen=True)
class LabelledSet:
    texts: tuple[str, ...]
    labels: tuple[str, ...]


def _read_lines(path) -> list[str]:
    from pathlib import Path

    from .errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file '{path}' does not exist.")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path}' is not UTF-8; convert it (iconv -t UTF-8) and retry.") from exc


def _read_tsv(path) -> tuple[list[str], list[list[str]]]:
    import csv

    from .errors import InputError

    rows = list(csv.reader(_read_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) < 2:
        raise InputError(f"'{path}' has no data rows; expected a TSV with a header row.")
    return [h.strip().lower() for h in rows[0]], [r for r in rows[1:] if any(c.strip() for c in r)]


def read_pairs(path) -> PairSet:
    """STS-B style TSV: columns sentence1, sentence2, score (GLUE layout, or any TSV with that header)."""
    from .errors import InputError

    header, rows = _read_tsv(path)
    try:
        a, b, s = header.index("sentence1"), header.index("sentence2"), header.index("score")
    except ValueError as exc:
        raise InputError(f"'{path}' needs columns sentence1, sentence2 and score; its header is {header}.") from exc
    rows = [r for r in rows if len(r) > max(a, b, s)]
    try:
        scores = np.array([float(r[s]) for r in rows])
    except ValueError as exc:
        raise InputError(f"'{path}': a score is not a number ({exc}).") from exc
    return PairSet(tuple(r[a] for r in rows), tuple(r[b] for r in rows), scores)


TEXT_HEADERS = ("sentence", "text", "sentence1", "review", "content")
LABEL_HEADERS = ("label", "labels", "class", "target", "category", "y")


def read_labelled(path, *, min_classes: int = 1) -> LabelledSet:
    """Text classification TSV: a text column and a label column; labels ints or strings; header row optional.

    With a header, the text column is sentence/text/review/content and the label column label/class/target/...;
    without one, column 1 is the text and column 2 the label. Empty text or label cells are refused with their
    line number (a silently dropped row would change the data); blank lines at the end are ignored.
    """
    from .errors import InputError

    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"'{path}' is empty; expected TSV rows 'text<TAB>label'.")
    first = [c.strip().lower() for c in lines[0].split("\t")]
    has_header = any(c in LABEL_HEADERS for c in first) or any(c in TEXT_HEADERS for c in first)
    if has_header:
        text_col = next((first.index(c) for c in TEXT_HEADERS if c in first), None)
        label_col = next((first.index(c) for c in LABEL_HEADERS if c in first), None)
        if text_col is None or label_col is None:
            raise InputError(f"'{path}': the header {first} needs a text column ({'/'.join(TEXT_HEADERS)}) and a "
                             f"label column ({'/'.join(LABEL_HEADERS)}); or drop the header and write "
                             "'text<TAB>label' rows.")
    else:
        text_col, label_col = 0, 1
    texts, labels = [], []
    for number, line in enumerate(lines[1:] if has_header else lines, start=2 if has_header else 1):
        cells = line.split("\t")
        if len(cells) <= max(text_col, label_col):
            what = "is empty" if not line.strip() else f"has {len(cells)} column(s), expected text<TAB>label"
            raise InputError(f"'{path}' line {number} {what}; fix or delete that line.")
        text, label = cells[text_col].strip(), cells[label_col].strip()
        if not text or not label:
            raise InputError(f"'{path}' line {number} has an empty {'text' if not text else 'label'}; "
                             "fix or delete that line.")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise InputError(f"'{path}' has a header but no data rows.")
    classes = sorted(set(labels))
    if len(classes) < min_classes:
        raise InputError(f"'{path}' has only {len(classes)} label value(s) ({', '.join(classes)}) in {len(texts)} "
                         f"rows; training a classifier needs at least {min_classes} classes. Check the label "
                         "column, or add examples of the other classes.")
    return LabelledSet(tuple(texts), tuple(labels))


def label_names(labels) -> list[str]:
    """Sorted label values: numerically when every label is an integer, else alphabetically."""
    values = set(labels)
    if all(v.lstrip("-").isdigit() for v in values):
        return [str(v) for v in sorted(values, key=int)]
    return sorted(values)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def stsb_spearman(embed, pairs: PairSet) -> float:
    """Spearman ×100 between cosine of pair embeddings and the gold scores."""
    cos = cosine_rows(embed(list(pairs.first)), embed(list(pairs.second)))
    return round(100 * spearman(cos, pairs.scores), 3)


def recall_at_k(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean overlap of each text's k nearest neighbours (cosine, itself excluded) under candidate vs reference."""
    def neighbours(e: np.ndarray) -> np.ndarray:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1)[:, :k]

    got, want = neighbours(candidate), neighbours(reference)
    return round(float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want)])), 4)


def check_labels(gold, label_names: list[str]) -> None:
    """Refuses gold labels the model does not know (by name, or by index 0..C-1)."""
    from .errors import InputError

    allowed = set(label_names) | {str(i) for i in range(len(label_names))}
    unknown = sorted(set(gold) - allowed)
    if unknown:
        raise InputError(f"the eval file has labels {unknown[:5]} that the model does not know; its labels are "
                         f"{label_names} (or their indices 0..{len(label_names) - 1}). Fix the eval file's label "
                         "column, or evaluate a model trained on those classes.")


def accuracy(predicted: list[str], gold: tuple[str, ...], label_names: list[str]) -> float:
    check_labels(gold, label_names)
    index = {name: str(i) for i, name in enumerate(label_names)}
    hits = [p == g or index[p] == g for p, g in zip(predicted, gold)]
    return round(100 * float(np.mean(hits)), 3)
