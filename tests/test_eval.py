import json

import numpy as np
import pytest

from edgesdk.cli import main
from edgesdk.errors import InputError
from edgesdk.evaluate import accuracy, read_pairs, recall_at_k


def _stsb_file(path, rows=40):
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "sun", "rain", "car", "tree", "music", "river", "city", "bread"]
    lines = ["genre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for i in range(rows):
        a = " ".join(rng.choice(words, 5))
        b = " ".join(rng.choice(words, 5))
        lines.append(f"main-news\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_stsb_eval_against_reference(tiny_export, tmp_path, capsys):
    fp32 = next(b.path for b in tiny_export.bundles if b.backend == "openvino" and b.precision == "fp32")
    int8 = next(b.path for b in tiny_export.bundles if b.backend == "openvino" and b.precision == "int8")
    out = tmp_path / "m.json"
    assert main(["eval", int8, "--task", "stsb", "--data", str(_stsb_file(tmp_path / "d.tsv")),
                 "--reference", fp32, "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["pairs"] == 40
    # the same Spearman computed here from the bundle's own embeddings (scipy), not read back from the tool
    from scipy.stats import spearmanr

    from edgesdk.evaluate import read_pairs
    from edgesdk.runtime import load

    pairs = read_pairs(str(tmp_path / "d.tsv"))
    with load(int8) as runner:
        a, b = runner.embed(list(pairs.first)), runner.embed(list(pairs.second))
    expected = 100 * spearmanr((a * b).sum(1), pairs.scores).statistic
    assert metrics["spearman"] == pytest.approx(expected, abs=1e-2)
    assert metrics["spearman_drop_points"] == pytest.approx(metrics["spearman_reference"] - metrics["spearman"],
                                                            abs=1e-3)
    # int8 stays close to its FP32 reference (cosine mean >= 0.98 at export): ranks and neighbours mostly agree
    assert abs(metrics["spearman_drop_points"]) < 10
    assert metrics["recall_at_10"] >= 0.6 and metrics["cosine_mean"] > 0.9


def test_cosine_task_needs_a_reference(tiny_bundle, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("a\nb\n")
    assert main(["eval", str(tiny_bundle), "--task", "cosine", "--data", str(texts)]) == 2
    assert "--reference" in capsys.readouterr().err


def test_pairs_file_needs_its_columns(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="sentence1, sentence2 and score"):
        read_pairs(path)


def test_recall_at_k_is_one_for_identical_and_low_for_random():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 8))
    assert recall_at_k(e, e, 10) == 1.0
    assert recall_at_k(rng.normal(size=(50, 8)), e, 10) < 0.5


def test_accuracy_rejects_unknown_labels():
    assert accuracy(["pos", "neg"], ("1", "neg"), ["neg", "pos"]) == 100.0
    with pytest.raises(InputError, match="labels \\['maybe'\\]"):
        accuracy(["pos"], ("maybe",), ["neg", "pos"])
