"""sentence-transformers parity: an app swaps SentenceTransformer(path) for edgesdk.runtime.load(bundle) in one line.

The bundle is the tiny BERT exported FP32 to ONNX Runtime; sentence-transformers 6.2 runs the same folder in
PyTorch. Float results agree within the FP32 fidelity bar; quantized precisions follow quantize_embeddings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgesdk.runtime
from edgesdk.errors import InputError
from edgesdk.runtime import encode as st
from edgesdk.runtime.manifest import manifest_digest

sentence_transformers = pytest.importorskip("sentence_transformers")

QUERIES = ["how small can an edge model be?", "what is int8 quantization"]
DOCS = ["Quantization stores weights in eight bits.", "Edge devices have little memory.", "The cat sat on the mat.",
        "A bundle carries its tokenizer and golden outputs."]
PROMPTS = {"query": "query: ", "document": "passage: "}


def search_app(model):
    """An app written against SentenceTransformer's API; it never looks at what `model` is."""
    queries = model.encode_query(QUERIES, normalize_embeddings=True)
    docs = model.encode_document(DOCS, batch_size=2)
    scores = np.asarray(model.similarity(queries, docs))
    return {"queries": queries, "docs": docs, "scores": scores,
            "short": model.encode(DOCS, truncate_dim=16, normalize_embeddings=True),
            "one": model.encode("a single sentence"),
            "binary": model.encode(DOCS, precision="ubinary"),
            "int8": model.encode(DOCS, precision="int8")}


def cosines(a, b):
    a, b = st.normalize_embeddings(np.asarray(a)), st.normalize_embeddings(np.asarray(b))
    return (a * b).sum(axis=-1)


@pytest.fixture()
def bundle_with_prompts(bundle_copy):
    """The tiny bundle with ST prompts in its manifest (export does not store them yet; the runner reads them)."""
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model"]["prompts"] = PROMPTS
    manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    return bundle_copy


def test_an_app_swaps_sentence_transformer_for_a_bundle_in_one_line(tiny_model_dir, bundle_with_prompts):
    reference = search_app(sentence_transformers.SentenceTransformer(str(tiny_model_dir), device="cpu",
                                                                     prompts=PROMPTS))
    result = search_app(edgesdk.runtime.load(bundle_with_prompts))  # the one line that changes
    for key in ("queries", "docs", "short"):
        assert result[key].shape == reference[key].shape
        assert cosines(result[key], reference[key]).min() >= 0.9999, key
    assert result["one"].shape == reference["one"].shape == (64,)
    np.testing.assert_allclose(result["scores"], reference["scores"], atol=1e-4)
    assert (result["scores"].argmax(axis=1) == reference["scores"].argmax(axis=1)).all()
    # quantized: same dtype and shape; sign bits and int8 buckets from the batch agree but for values at a boundary
    for key, dtype, shape in (("binary", np.uint8, (4, 8)), ("int8", np.int8, (4, 64))):
        assert result[key].dtype == reference[key].dtype == dtype and result[key].shape == shape
    bits = np.unpackbits(result["binary"]) == np.unpackbits(reference["binary"])
    assert bits.mean() >= 0.99
    assert np.abs(result["int8"].astype(int) - reference["int8"].astype(int)).max() <= 1


def test_prompts_stored_in_the_bundle_are_used_by_encode_query_and_prompt_name(bundle_with_prompts, tiny_bundle):
    with edgesdk.runtime.load(bundle_with_prompts) as runner:
        assert runner.prompts == PROMPTS
        query = runner.encode_query(QUERIES)
        np.testing.assert_array_equal(query, runner.embed(["query: " + q for q in QUERIES]))
        np.testing.assert_array_equal(runner.encode(QUERIES, prompt_name="document"),
                                      runner.embed(["passage: " + q for q in QUERIES]))
        np.testing.assert_array_equal(runner.encode(QUERIES, prompt="custom: "),
                                      runner.embed(["custom: " + q for q in QUERIES]))
        with pytest.raises(InputError, match="prompt_name 'nope' is not one of this bundle's prompts"):
            runner.encode(QUERIES, prompt_name="nope")
    with edgesdk.runtime.load(tiny_bundle) as plain:  # no prompts stored: encode_query is encode
        assert plain.prompts == {}
        np.testing.assert_array_equal(plain.encode_query(QUERIES), plain.embed(QUERIES))


@pytest.mark.parametrize("precision", st.PRECISIONS)
def test_quantize_embeddings_matches_sentence_transformers_exactly(precision):
    from sentence_transformers import quantize_embeddings

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(16, 24)).astype(np.float32)
    calibration = rng.normal(size=(200, 24)).astype(np.float32)
    ranges = np.vstack([calibration.min(axis=0), calibration.max(axis=0)])
    for kwargs in ({}, {"calibration_embeddings": calibration}, {"ranges": ranges}):
        ours = st.quantize_embeddings(embeddings, precision, **kwargs)
        theirs = quantize_embeddings(embeddings, precision, **kwargs)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), kwargs


def test_encode_uses_calibration_ranges_for_int8(tiny_bundle):
    with edgesdk.runtime.load(tiny_bundle) as runner:
        calibration = runner.encode(DOCS * 4)
        ranges = np.vstack([calibration.min(axis=0), calibration.max(axis=0)])
        one = runner.encode(["Edge devices have little memory."], precision="uint8", ranges=ranges)
        assert one.dtype == np.uint8 and one.shape == (1, 64)
        np.testing.assert_array_equal(one, st.quantize_embeddings(runner.embed(["Edge devices have little memory."]),
                                                                  "uint8", ranges=ranges))
        with pytest.raises(InputError, match="single embedding"):
            runner.encode(["one text"], precision="int8")


def test_encode_options_are_checked_and_convert_to_numpy_false_gives_a_list(tiny_bundle, capsys):
    with edgesdk.runtime.load(tiny_bundle) as runner:
        vectors = runner.encode(DOCS, convert_to_numpy=False, show_progress_bar=True, batch_size=2)
        assert isinstance(vectors, list) and len(vectors) == 4 and vectors[0].shape == (64,)
        with pytest.raises(InputError, match="truncate_dim must be an integer from 1 to 64"):
            runner.encode(DOCS, truncate_dim=65)
        with pytest.raises(InputError, match="precision 'fp8' is not supported"):
            runner.encode(DOCS, precision="fp8")
        sims = runner.similarity(runner.encode(DOCS), runner.encode(DOCS))
        np.testing.assert_allclose(np.diag(sims), 1.0, rtol=1e-5)


@pytest.mark.parametrize("function", st.SIMILARITIES)
def test_similarity_functions_match_sentence_transformers(function):
    from sentence_transformers.util import SimilarityFunction

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    theirs = SimilarityFunction.to_similarity_fn(function)(a, b).numpy()
    np.testing.assert_allclose(st.similarity(a, b, function), theirs, rtol=1e-5, atol=1e-5)
