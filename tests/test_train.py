"""Classifier training (FP32 fine-tune, QAT) and the bert_mobile example's --quick run, on the tiny BERT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesdk.errors import InputError
from edgesdk.evaluate import check_labels, label_names, read_labelled
from edgesdk.train.loop import TrainConfig

from conftest import ROOT, write_profile

POSITIVE = ["a charming and often affecting journey", "the best film of the year", "warm , funny and wise",
            "an utterly delightful surprise", "beautifully acted and moving"]
NEGATIVE = ["unflinchingly bleak and desperate", "a dull , lifeless mess", "the plot makes no sense",
            "tedious and far too long", "an embarrassing waste of talent"]


def write_tsv(path: Path, rows: list[tuple[str, str]], header: str | None = "sentence\tlabel") -> Path:
    lines = ([header] if header else []) + [f"{t}\t{label}" for t, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentiment_rows(copies: int, pos: str = "1", neg: str = "0") -> list[tuple[str, str]]:
    """Distinct rows (a numbered variant per copy), so calibration sets drawn from them have as many texts."""
    variant = ["", " , really", " , honestly", " again", " , i think", " , they say", " as expected", " overall"]
    return [(t + variant[i % 8] + " !" * (i // 8), label) for i in range(copies)
            for texts, label in ((POSITIVE, pos), (NEGATIVE, neg)) for t in texts]


# -- data ---------------------------------------------------------------------------------------------------------
def test_reads_tsv_with_or_without_header_and_string_labels(tmp_path):
    with_header = read_labelled(write_tsv(tmp_path / "a.tsv", sentiment_rows(1)))
    without = read_labelled(write_tsv(tmp_path / "b.tsv", sentiment_rows(1, "pos", "neg"), header=None))
    assert with_header.texts == without.texts and len(with_header.texts) == 10
    assert label_names(with_header.labels) == ["0", "1"]
    assert label_names(without.labels) == ["neg", "pos"]
    assert label_names(["10", "9", "2"]) == ["2", "9", "10"]  # integers sort numerically


def test_one_class_training_data_is_refused(tmp_path):
    path = write_tsv(tmp_path / "one.tsv", [(t, "1") for t in POSITIVE])
    with pytest.raises(InputError, match=r"only 1 label value\(s\) \(1\).*at least 2 classes"):
        read_labelled(path, min_classes=2)


@pytest.mark.parametrize("bad, where", [("\t1", "line 3 has an empty text"), ("good film\t", "line 3 has an empty label"),
                                        ("", "line 3 is empty"), ("no label column", "line 3 has 1 column")])
def test_empty_or_broken_rows_are_refused_with_their_line(tmp_path, bad, where):
    path = tmp_path / "bad.tsv"
    path.write_text(f"sentence\tlabel\nfine film\t1\n{bad}\nawful film\t0\n", encoding="utf-8")
    with pytest.raises(InputError, match=where):
        read_labelled(path)


def test_trailing_blank_lines_are_fine(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("fine film\t1\nawful film\t0\n\n\n", encoding="utf-8")
    assert len(read_labelled(path).texts) == 2


def test_unknown_eval_labels_are_refused():
    with pytest.raises(InputError, match=r"labels \['2', 'maybe'\] that the model does not know"):
        check_labels(("0", "1", "2", "maybe"), ["0", "1"])
    check_labels(("neg", "pos", "0", "1"), ["neg", "pos"])  # names or indices


def test_training_settings_are_checked():
    with pytest.raises(InputError, match="epochs=0"):
        TrainConfig(epochs=0).check()
    with pytest.raises(InputError, match="limit=-1"):
        TrainConfig(limit=-1).check()


# -- the CLI refuses before training ------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_qat_without_train_data_on_an_encoder_is_refused(tiny_model_dir, tmp_path):
    done = run_cli("export", "--target", "onnxruntime", "--model", str(tiny_model_dir), "--qat", "--out",
                   str(tmp_path))
    assert done.returncode == 2
    assert "--qat needs --train-data" in done.stderr


def test_unknown_eval_labels_fail_before_training(tiny_model_dir, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(2))
    dev = write_tsv(tmp_path / "dev.tsv", [("so so", "2"), ("fine", "1")])
    done = run_cli("export", "--target", "onnxruntime", "--model", str(tiny_model_dir), "--train-data", str(train),
                   "--eval-data", str(dev), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "labels ['2']" in done.stderr
    assert not (tmp_path / "out" / "models").exists()  # refused before any fine-tuning


def test_eval_data_on_an_embedding_model_is_refused(tiny_model_dir, tmp_path):
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(1))
    done = run_cli("export", "--target", "onnxruntime", "--model", str(tiny_model_dir), "--precision", "fp32",
                   "--eval-data", str(dev), "--out", str(tmp_path / "out"), "--no-progress")
    assert done.returncode == 2 and "no classification head" in done.stderr


# -- the example, end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_example(tiny_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("bert-mobile")
    train = write_tsv(work / "train.tsv", sentiment_rows(8))
    dev = write_tsv(work / "dev.tsv", sentiment_rows(2, "1", "0"), header=None)
    # a random-weight classifier after a few steps sits at p ≈ 0.5 for every text: any int8 noise flips its label,
    # so the top-1 agreement budget is loosened (as tiny_export loosens the cosine budget)
    targets = ",".join(str(write_profile(work / f"{base}.toml", base, fidelity={"top1_agreement_min": 0.01}))
                       for base in ("onnxruntime", "android"))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "bert_mobile" / "run.py"), "--quick",
                           "--model", str(tiny_model_dir), "--targets", targets, "--train", str(train),
                           "--dev", str(dev), "--out", str(work / "out"), "--workers", "2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "out", done


def test_quick_example_builds_fp32_ptq_and_qat_bundles_and_measures_them(quick_example):
    out, done = quick_example
    result = json.loads((out / "results.json").read_text())
    kinds = {(r["target"], r["kind"]) for r in result["bundles"]}
    assert kinds == {(t, k) for t in ("onnxruntime", "android") for k in ("fp32", "ptq", "qat")}
    for row in result["bundles"]:
        assert row["rows"] == 20 and 0 <= row["accuracy"] <= 100 and row["p50_ms_seq128"] > 0
        assert 0 <= row["top1_agreement_vs_fp32"] <= 1
    assert (out / "accuracy_vs_latency.png").stat().st_size > 10_000
    table = (out / "results.md").read_text()
    assert table.count("| android |") == 3 and "| (reference) |" in table
    assert "accuracy_vs_latency.png" in done.stdout


def test_qat_bundle_manifest_records_training_and_the_qat_scheme(quick_example):
    from edgesdk.runtime import load

    out, _ = quick_example
    qat = next(p for p in (out / "dist").iterdir() if p.name.endswith("-qat-android-int8"))
    with load(qat) as runner:
        m = runner.manifest
        result = runner.classify(["a charming journey", "a dull mess"])
    assert m.model.task == "classification" and m.model.labels == ("0", "1")
    assert m.model.training["kind"] == "qat"
    assert m.quantization.qat["tool"].startswith("nncf")
    assert m.quantization.qat["spec"]["activation_symmetric"] is False  # android's scheme
    assert m.quantization.spec["smooth_quant"] is False  # would move the QAT weights off their grid
    assert m.fidelity.top1_agreement is not None
    assert result.probabilities.shape == (2, 2) and set(result.labels) <= {"0", "1"}
    models = out / "dist" / "models"
    record = json.loads(next(models.glob("*-qat/edgesdk_training.json")).read_text())
    assert record["training"]["steps"] >= 1 and record["qat"]["spec_from_targets"] == ["onnxruntime", "android"]
    # INT8 is calibrated on, and compared with FP32 on, the task's own texts (the example passes its dev subset)
    report = json.loads((qat / "report.json").read_text())
    assert report["calibration"]["source"].endswith("-calibration.txt")
    assert report["fidelity_data"]["source"].endswith("dev-subset.tsv") and report["fidelity_data"]["items"] > 0


def test_a_classifiers_int8_is_calibrated_and_checked_on_its_own_task_texts(tmp_path):
    """Without --calibration/--fidelity-data, a trained classifier's INT8 builds calibrate on one part of its
    training texts and are compared with FP32 on another part (the packaged held-out texts are general ones)."""
    from edgesdk.evaluate import LabelledSet
    from edgesdk.train.pipeline import CALIBRATION_TEXTS, _task_texts

    texts = [f"text number {i}" for i in range(CALIBRATION_TEXTS + 300)]
    data = LabelledSet(texts=tuple(texts), labels=tuple(str(i % 3) for i in range(len(texts))))
    cal, fid = _task_texts(data, tmp_path / "c.txt", tmp_path / "f.txt")
    cal_lines, fid_lines = (Path(p).read_text().splitlines() for p in (cal, fid))
    assert len(cal_lines) == CALIBRATION_TEXTS and len(fid_lines) == 300 and not set(cal_lines) & set(fid_lines)
    small = LabelledSet(texts=tuple(texts[:150]), labels=("a", "b") * 75)
    _, fid = _task_texts(small, tmp_path / "c2.txt", tmp_path / "f2.txt")
    assert len(Path(fid).read_text().splitlines()) == 150  # too few to split: fidelity uses them all


def test_training_checkpoints_resume_and_refuse_other_settings(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from edgesdk.evaluate import LabelledSet
    from edgesdk.train.classifier import text_encoder
    from edgesdk.train.loop import train

    rows = sentiment_rows(2)
    data = LabelledSet(tuple(t for t, _ in rows), tuple(label for _, label in rows))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    config = TrainConfig(epochs=2, batch_size=8, checkpoint_every=1, limit=None)
    checkpoint = tmp_path / ".run.checkpoint.safetensors"
    first = train(model, data, {"0": 0, "1": 1}, text_encoder(tiny_model_dir, 32), config, checkpoint, "t", False)
    assert first["steps"] == 6 and checkpoint.is_file()
    again = train(model, data, {"0": 0, "1": 1}, text_encoder(tiny_model_dir, 32), config, checkpoint, "t", False)
    assert again["final_loss"] == first["final_loss"]  # resumed at the last step: nothing left to train
    with pytest.raises(InputError, match="written with other training settings"):
        train(model, data, {"0": 0, "1": 1}, text_encoder(tiny_model_dir, 32), TrainConfig(epochs=3, batch_size=8),
              checkpoint, "t", False)


def test_inspect_and_verify_a_qat_classifier_bundle(quick_example, capsys):
    from edgesdk.cli import main

    out, _ = quick_example
    qat = next(p for p in (out / "dist").iterdir() if p.name.endswith("-qat-onnxruntime-int8"))
    assert main(["inspect", str(qat)]) == 0
    text = capsys.readouterr().out
    assert "top-1 agreement" in text and "training    qat" in text and "qat         nncf" in text
    assert main(["verify", str(qat)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_bad_target_or_precision_fails_before_training(tiny_model_dir, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(2))
    for extra, message in ((["--target", "no-such-board"], "no-such-board"),
                           (["--target", "onnxruntime", "--precision", "fp16"], "does not accept precision 'fp16'")):
        done = run_cli("export", *extra, "--model", str(tiny_model_dir), "--train-data", str(train), "--qat",
                       "--out", str(tmp_path / "out"))
        assert done.returncode == 2 and message in done.stderr
        assert not (tmp_path / "out" / "models").exists()


def test_qat_exports_through_the_users_profile_file_not_the_bundled_one_of_that_name(tmp_path):
    """A profile file called 'android' with its own shapes: the QAT int8 export must read that file (it used to
    re-resolve the name, so the bundled android profile's shapes were built instead)."""
    from edgesdk.api import ExportOptions
    from edgesdk.train.pipeline import _qat_groups

    mine = write_profile(tmp_path / "android.toml", "android", name="android",
                         shapes={"buckets": [16, 128], "batch_shapes": []})
    [(_, given, names, _)] = _qat_groups(ExportOptions(targets=(str(mine),), model="unused"))
    assert given == (str(mine),) and names == ("android",)
