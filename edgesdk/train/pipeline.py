"""`edgesdk export --train-data FILE [--qat]`: fine-tune a classifier, optionally QAT it, export every target.

    model folder ──fine-tune (FP32)──▶ OUT/models/NAME ──export──▶ fp32 bundles (+ PTQ int8 bundles)
                                             └──QAT (NNCF, per weight scheme)──▶ OUT/models/NAME-qat ──export──▶ int8

The QuantSpec that drives QAT is the target profile's, the same one its PTQ reads; targets whose weight scheme is
the same (all bundled ones: int8, per-channel, symmetric) share one QAT run, using the first such target's
activation scheme. Trained models are kept under OUT/models and reused when the data and settings match.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import outdir
from ..api import ExportOptions, ExportResult, export, progress_bars
from ..errors import InputError
from ..evaluate import LabelledSet, check_labels, label_names, read_labelled
from ..frontends.source import default_model_path
from ..profiles import load_profile
from ..quant import QuantSpec
from .classifier import fine_tune, quantization_aware_train
from .loop import TrainConfig

log = logging.getLogger("edgesdk")
QAT_DEFAULTS = TrainConfig(epochs=1.0, lr=1e-5, limit=2000)
CALIBRATION_TEXTS = 400
FIDELITY_TEXTS = 512
MIN_FIDELITY_TEXTS = 128


@dataclass(frozen=True)
class TrainingOptions:
    train_data: str | None = None  # TSV text<TAB>label (required)
    qat: bool = False
    with_ptq: bool = False  # with qat: also build PTQ int8 bundles from the FP32 model, for comparison
    config: TrainConfig = field(default_factory=TrainConfig)
    qat_config: TrainConfig = QAT_DEFAULTS


@dataclass
class TrainedExport:
    fp32_model: str
    qat_models: dict[str, str]
    results: list[tuple[str, ExportResult]]  # (which model: "fp32" | "qat", result)

    @property
    def bundles(self):
        """(kind, summary): kind is fp32/fp16 for float bundles, ptq or qat for int8 ones."""
        return [(("ptq" if b.precision == "int8" else b.precision) if model == "fp32" else "qat", b)
                for model, r in self.results for b in r.bundles]


def export_trained(options: ExportOptions, training: TrainingOptions) -> TrainedExport:
    with progress_bars(options.progress):  # NNCF's own bars during QAT set-up follow --no-progress too
        return _export_trained(options, training)


def _export_trained(options: ExportOptions, training: TrainingOptions) -> TrainedExport:
    base = Path(options.model) if options.model else default_model_path()
    if not training.train_data:
        raise InputError("--qat needs --train-data FILE (TSV text<TAB>label): QAT fine-tunes on labelled data.")
    data = read_labelled(training.train_data, min_classes=2)
    if options.eval_data:  # before any training: a wrong eval file should not cost a fine-tune
        check_labels(read_labelled(options.eval_data).labels, label_names(data.labels))
    float_groups, qat_targets = _plan(options, training)  # bad targets / precisions fail before training
    outdir.prepare(options.out, base, sum(len(t) * len(p) for t, p in float_groups) + len(qat_targets),
                   extra_models=1 + bool(qat_targets))  # --out checked before training (bundles + models/)
    models = Path(options.out) / "models"
    name = f"{_base_name(base)}-{_slug(training.train_data)}"
    fp32_dir = fine_tune(base, data, models / name, training.config, options.progress)
    calibration, fidelity = _task_texts(data, models / f"{name}-calibration.txt", models / f"{name}-fidelity.txt")
    options = replace(options, calibration=options.calibration or calibration,
                      fidelity_data=options.fidelity_data or fidelity)
    results: list[tuple[str, ExportResult]] = []
    for targets, precisions in float_groups:  # one export per distinct precision list (profiles differ)
        results.append(("fp32", export(replace(options, model=str(fp32_dir), targets=targets,
                                               precisions=precisions))))
    qat_models = {}
    if qat_targets:
        for key, targets, names, spec in _qat_groups(replace(options, targets=qat_targets)):
            folder = models / (f"{name}-qat" if len(qat_models) == 0 else f"{name}-qat-{key}")
            qat_dir = quantization_aware_train(fp32_dir, spec, list(names), data, folder, training.qat_config,
                                               options.progress)
            qat_models[key] = str(qat_dir)
            results.append(("qat", export(replace(options, model=str(qat_dir), targets=targets,
                                                  precisions=("int8",)))))
    return TrainedExport(str(fp32_dir), qat_models, results)


def _plan(options: ExportOptions, training: TrainingOptions):
    """([(targets, precisions)] built from the FP32 model, targets whose int8 bundles come from QAT)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    qat_targets = []
    if not options.targets:
        raise InputError("no target given; pass --target NAME (see `edgesdk targets`).")
    for target in options.targets:
        profile = load_profile(target)
        precisions = tuple(options.precisions or profile.default_precisions)
        wrong = [p for p in precisions if p not in profile.precisions]
        if wrong:
            raise InputError(f"target '{profile.name}' does not accept precision '{wrong[0]}'; it accepts "
                             f"{', '.join(profile.precisions)}.")
        if training.qat and "int8" in precisions:
            qat_targets.append(target)
        float_model = tuple(p for p in precisions if p != "int8" or not training.qat or training.with_ptq)
        if float_model:
            groups.setdefault(float_model, []).append(target)
    return [(tuple(targets), precisions) for precisions, targets in groups.items()], tuple(qat_targets)


def _qat_groups(options: ExportOptions) -> list[tuple[str, tuple[str, ...], tuple[str, ...], QuantSpec]]:
    """Targets grouped by the weight scheme QAT bakes in; each group trains once under its first target's spec.
    Each group is (key, the targets as the user gave them, their profile names, spec): a profile file stays that
    file for the export, even when its name is a bundled profile's."""
    groups: dict[str, tuple[list[str], list[str], QuantSpec]] = {}
    for target in options.targets:
        profile = load_profile(target)
        if "int8" not in profile.precisions:
            continue
        spec = QuantSpec.from_profile(profile, options.quant)
        key = f"w{spec.weight_dtype}-{spec.weight_granularity}-{'sym' if spec.weight_symmetric else 'asym'}"
        given, names, _ = groups.setdefault(key, ([], [], spec))
        given.append(target)
        names.append(profile.name)
    for key, (_, names, spec) in groups.items():
        log.info("QAT scheme %s for %s (activations %s, from %s's profile)", key, ", ".join(names),
                 "symmetric" if spec.activation_symmetric else "asymmetric", names[0])
    return [(key, tuple(given), tuple(names), spec) for key, (given, names, spec) in groups.items()]


def _task_texts(data: LabelledSet, calibration: Path, fidelity: Path) -> tuple[str, str]:
    """Calibration and fidelity texts for the classifier's INT8 builds, from its own training texts (seeded
    shuffle, one per line): the first CALIBRATION_TEXTS calibrate, the next FIDELITY_TEXTS are what FP32 and INT8
    are compared on. The packaged held-out texts are general English and other languages, where a topic
    classifier's margins are thin: a 4-class QAT bundle agreed with FP32 on 0.964 of them while its task accuracy
    held. A small training set lends its calibration texts to fidelity too (at least MIN_FIDELITY_TEXTS)."""
    texts = list(dict.fromkeys(t.replace("\n", " ") for t in data.texts))
    random.Random(1).shuffle(texts)
    rest = texts[CALIBRATION_TEXTS:CALIBRATION_TEXTS + FIDELITY_TEXTS]
    if len(rest) < MIN_FIDELITY_TEXTS:
        rest = texts[:FIDELITY_TEXTS]
    for path, lines in ((calibration, texts[:CALIBRATION_TEXTS]), (fidelity, rest)):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(path)
    return str(calibration), str(fidelity)


def _base_name(base: Path) -> str:
    from ..frontends.hf import model_name

    return model_name(base)


def _slug(path: str) -> str:
    p = Path(path)
    stem = p.parent.name if p.stem.lower() in ("train", "data", "training") and p.parent.name else p.stem
    return "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-") or "data"
