import threading

import numpy as np
import pytest

from edgesdk.errors import InputError
from edgesdk.runtime import load


@pytest.fixture(scope="module")
def runner(tiny_bundle):
    with load(tiny_bundle, threads=1) as r:
        yield r


def test_embed_shape_and_normalisation(runner):
    vectors = runner.embed(["hello world", "edge devices are small"])
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(runner.encode("hello world"), vectors[0], rtol=1e-5, atol=1e-6)


def test_batching_does_not_change_results(runner):
    texts = [f"sentence number {i} about {'edge ' * (i % 7)}devices" for i in range(11)]
    np.testing.assert_allclose(runner.embed(texts, batch_size=3), runner.embed(texts, batch_size=11), atol=1e-5)


@pytest.mark.parametrize("bad,needle", [([], "empty"), ([1, 2], "texts\\[0\\] is a int"), (None, "NoneType"),
                                        (["ok", None], "texts\\[1\\]")])
def test_bad_text_input(runner, bad, needle):
    with pytest.raises(InputError, match=needle):
        runner.embed(bad)


def test_bad_batch_size(runner):
    with pytest.raises(InputError, match="batch_size"):
        runner.embed(["a"], batch_size=0)


def test_long_text_is_truncated_to_max_length(runner):
    feeds = runner.tokenize(["word " * 10_000])
    assert feeds["input_ids"].shape == (1, runner.manifest.tokenizer.max_length)
    assert runner.embed(["word " * 10_000]).shape == (1, 64)


def test_classify_on_an_embedding_model_is_refused(runner):
    with pytest.raises(InputError, match="no classification head"):
        runner.classify(["good movie"])


def test_run_validates_feeds(runner):
    feeds = runner.tokenize(["hello"])
    with pytest.raises(InputError, match="missing"):
        runner.run({"input_ids": feeds["input_ids"]})
    with pytest.raises(InputError, match="dtype"):
        runner.run({k: v.astype(np.float32) for k, v in feeds.items()})
    out = runner.run(feeds)
    assert out[runner.outputs[0].name].shape[:2] == feeds["input_ids"].shape


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update(input_ids=f["input_ids"] * 0 + 30522), r"token id 30522; ids must be in \[0, 30522\)"),
    (lambda f: f.update(input_ids=f["input_ids"] * 0 - 1), "token id -1"),
    (lambda f: f.update(input_ids=f["input_ids"] * 0 + 2**62), "token id"),
    (lambda f: f.update(attention_mask=f["attention_mask"][:, :-1]), "one shape"),
    (lambda f: f.update(attention_mask=f["attention_mask"] * 3), "only 0 and 1"),
    (lambda f: f.update({k: np.zeros((1, 1000), np.int64) for k in f}), "at most 128 tokens"),
    (lambda f: f.update({k: np.zeros((0, 4), np.int64) for k in f}), "batch size 0"),
])
def test_run_refuses_feeds_the_runtime_would_misread(runner, change, message):
    feeds = runner.tokenize(["hello world"])
    change(feeds)
    with pytest.raises(InputError, match=message):
        runner.run(feeds)


def test_batch_size_must_be_a_real_int_and_bad_unicode_is_replaced(runner):
    with pytest.raises(InputError, match="batch_size"):
        runner.embed(["a"], batch_size=True)
    lone = runner.embed(["caf\ud800e"])
    assert np.allclose(lone, runner.embed(["caf\ufffde"]))


def test_length_sorted_batching_returns_input_order(runner):
    texts = ["short", "a much longer sentence with many more tokens than the others", "mid length text here"]
    together = runner.embed(texts, batch_size=2)
    alone = np.concatenate([runner.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_batches_are_sorted_by_token_count_not_characters(tiny_bundle, monkeypatch):
    """Texts whose character and token lengths disagree (a long word is few tokens, digits and symbols are many):
    each batch the session sees is as wide as its own longest text in tokens, so the corpus pays the least
    padding, also when the corpus is tokenized in several chunks; results still come back in input order, the
    same as one text at a time."""
    from edgesdk.runtime import text

    monkeypatch.setattr(text, "ENCODE_CHUNK", 4)
    runner = load(tiny_bundle, threads=1)
    texts = ["1 2 3 4 5 6 7 8 9", "internationalization", "a, b; c: d!", "hello", "? ! ? !", "extraordinarily"]
    tokens = runner.tokenize(texts)["attention_mask"].sum(axis=1)
    assert sorted(tokens, reverse=True) != list(tokens[np.argsort([-len(t) for t in texts], kind="stable")])
    widths, infer = [], runner._session.infer
    monkeypatch.setattr(runner._session, "infer", lambda feeds: widths.append(feeds["input_ids"].shape) or infer(feeds))
    together = runner.embed(texts, batch_size=2)
    expected = sorted(tokens, reverse=True)
    assert widths == [(2, int(expected[i])) for i in range(0, len(texts), 2)], widths
    monkeypatch.undo()
    alone = np.concatenate([runner.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(runner.encode(texts, batch_size=2), alone, atol=1e-5)  # encode() sorts the same way


def test_bad_threads_value(tiny_bundle):
    with pytest.raises(InputError, match="threads"):
        load(tiny_bundle, threads=0)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_eight_threads_times_500_calls_are_bit_identical(tiny_export, backend):
    """One Runner shared by 8 threads, 500 embed() calls each, mixed inputs: every answer equals the single-thread
    one, bit for bit (tokenizer, session and pooling all shared)."""
    from pathlib import Path

    path = next(b.path for b in tiny_export.bundles if b.backend == backend and b.precision == "int8")
    runner = load(Path(path), threads=1)
    texts = [[f"thread {i} says {'hello ' * i}", "edge devices"] for i in range(4)]
    expected = [runner.embed(t) for t in texts]  # the whole path: tokenizer, session, pooling
    mismatches, errors = [], []

    def work(worker):
        try:
            for call in range(500):
                k = (worker + call) % len(texts)
                if not np.array_equal(runner.embed(texts[k]), expected[k]):
                    mismatches.append((worker, call))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not mismatches, (errors[:1], mismatches[:5])
