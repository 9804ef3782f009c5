"""The thin runner: one Runner over any backend session, with tokenization, batching and pooling.

A backend module (`edgesdk.runtime.<backend>`) provides `open_session(bundle, threads) -> Session`; the Runner
validates feeds against the manifest's input specs, batches texts, and pools outputs. Runners are thread-safe:
sessions are created per thread where the runtime needs it, and nothing mutable is shared between calls.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import BackendNotAvailableError, InputError
from . import encode as st
from .manifest import Bundle, read_bundle
from .text import TextEncoder, check_texts, pool, softmax

RUNTIME_BACKENDS = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "tflite": "tflite"}


class Session(Protocol):
    """What a backend module's open_session() returns."""

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Classification:
    labels: list[str]
    probabilities: np.ndarray  # [N, num_labels]
    label_names: list[str]


class Runner:
    """Runs a bundle: `run(feeds)`, `embed(texts)` (alias `encode`), `classify(texts)`."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.threads = threads
        self.inputs = self.manifest["inputs"]
        self.outputs = self.manifest["outputs"]
        model = self.manifest["model"]
        self.pooling, self.normalize, self.task = model["pooling"], model["normalize"], model["task"]
        self._encoder = TextEncoder(str(bundle.file(self.manifest["tokenizer"]["path"])),
                                    self.manifest["tokenizer"], self.inputs)
        module = importlib.import_module(f"edgesdk.runtime.{_backend_module(bundle.backend)}")
        self._session: Session = module.open_session(bundle, threads)
        self._lock = threading.Lock()

    # -- raw tensors -------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run raw integer feeds (names and dtypes as in manifest['inputs']) and return the raw outputs."""
        return self._session.infer(self._check_feeds(feeds))

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self._encoder(check_texts(texts))

    # -- sentence level ----------------------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings [N, H], pooled and normalised as the model was trained (like ST `encode()`)."""
        texts = check_texts(texts)
        if self.task != "embedding":
            raise InputError(f"this bundle's task is '{self.task}', not 'embedding'; use classify() or run().")
        return np.concatenate([self._embed_batch(texts[i:i + batch_size])
                               for i in range(0, len(texts), _check_batch(batch_size))])

    def classify(self, texts: str | Sequence[str], batch_size: int = 32) -> Classification:
        texts = check_texts(texts)
        if self.task != "classification":
            raise InputError(f"this bundle's task is '{self.task}': it has no classification head, so classify() "
                             "cannot run. Export a model with a sequence-classification head, or use embed().")
        logits = np.concatenate([self._first_output(texts[i:i + batch_size])
                                 for i in range(0, len(texts), _check_batch(batch_size))])
        probs = softmax(logits)
        names = list(self.manifest["model"]["labels"])
        return Classification([names[i] for i in probs.argmax(axis=1)], probs, names)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        feeds = self._encoder(texts)
        hidden = self._session.infer(feeds)[self.outputs[0]["name"]]
        return pool(hidden, feeds["attention_mask"], self.pooling, self.normalize)

    def _first_output(self, texts: list[str]) -> np.ndarray:
        return self._session.infer(self._encoder(texts))[self.outputs[0]["name"]].astype(np.float32)

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, dict):
            raise InputError(f"feeds must be a dict of name -> array, got {type(feeds).__name__}.")
        expected = {spec["name"]: spec for spec in self.inputs}
        missing, extra = expected.keys() - feeds.keys(), feeds.keys() - expected.keys()
        if missing or extra:
            raise InputError(f"feeds have names {sorted(feeds)}; the model takes {sorted(expected)} "
                             f"(missing {sorted(missing)}, unexpected {sorted(extra)}).")
        checked = {}
        for name, spec in expected.items():
            array = np.asarray(feeds[name])
            if array.ndim != len(spec["shape"]):
                raise InputError(f"feed '{name}' has shape {array.shape}; the model wants rank {len(spec['shape'])} "
                                 f"({spec['shape']}).")
            for axis, dim in enumerate(spec["shape"]):
                if isinstance(dim, int) and array.shape[axis] != dim:
                    raise InputError(f"feed '{name}' has shape {array.shape}; axis {axis} must be {dim} "
                                     f"(static shape {spec['shape']}).")
            if not np.issubdtype(array.dtype, np.integer):
                raise InputError(f"feed '{name}' has dtype {array.dtype}; the model wants {spec['dtype']} token ids.")
            checked[name] = array.astype(spec["dtype"], copy=False)
        return checked

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sentence-transformers parity: encode() takes SentenceTransformer.encode()'s keyword arguments ---------
    @property
    def prompts(self) -> dict[str, str]:
        """Prompts stored with the model (ST's `prompts`, e.g. {"query": "query: "}); {} when it has none."""
        return dict(self.manifest["model"].get("prompts") or {})

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32, *, prompt_name: str | None = None,
               prompt: str | None = None, normalize_embeddings: bool = False, truncate_dim: int | None = None,
               precision: str = "float32", ranges: np.ndarray | None = None,
               calibration_embeddings: np.ndarray | None = None, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray | list[np.ndarray]:
        """Like SentenceTransformer.encode(): [N, D] (or [D] for one string); see edgesdk.runtime.encode."""
        texts = check_texts(sentences)
        chosen = st.resolve_prompt(self.prompts, prompt, prompt_name, self.manifest["model"].get("default_prompt_name"))
        texts = st.apply_prompt(texts, chosen)
        starts = range(0, len(texts), _check_batch(batch_size))
        vectors = np.concatenate([self.embed(texts[i:i + batch_size], batch_size)
                                  for i in st.progress(starts, len(starts), show_progress_bar)])
        vectors = st.postprocess(vectors, truncate_dim=truncate_dim, normalize=normalize_embeddings,
                                 already_unit=bool(self.normalize), precision=precision, ranges=ranges,
                                 calibration_embeddings=calibration_embeddings)
        if isinstance(sentences, str):
            return vectors[0]
        return vectors if convert_to_numpy else list(vectors)

    def encode_query(self, sentences: str | Sequence[str], batch_size: int = 32, **options: Any):
        """encode() with the model's "query" prompt unless a prompt is given (ST's encode_query)."""
        if options.get("prompt") is None and options.get("prompt_name") is None:
            options["prompt_name"] = st.first_prompt_name(self.prompts, st.QUERY_PROMPT_NAMES)
        return self.encode(sentences, batch_size, **options)

    def encode_document(self, sentences: str | Sequence[str], batch_size: int = 32, **options: Any):
        """encode() with the model's "document" / "passage" / "corpus" prompt, the first it has (ST's order)."""
        if options.get("prompt") is None and options.get("prompt_name") is None:
            options["prompt_name"] = st.first_prompt_name(self.prompts, st.DOCUMENT_PROMPT_NAMES)
        return self.encode(sentences, batch_size, **options)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise similarity [len(a), len(b)] with the model's similarity function (cosine unless it says)."""
        return st.similarity(a, b, self.manifest["model"].get("similarity_fn_name") or "cosine")


def _check_batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def _backend_module(backend: str) -> str:
    if backend not in RUNTIME_BACKENDS:
        raise BackendNotAvailableError(f"this edgesdk has no runner for backend '{backend}'. "
                                       f"Runners available: {', '.join(sorted(RUNTIME_BACKENDS))}.")
    return RUNTIME_BACKENDS[backend]


def load(path: str | Path, threads: int | None = None, *, verify: bool = True) -> Runner:
    """Open a bundle folder (verifying every file's sha256) and return a Runner for its backend.

    threads: intra-op threads for the runtime (None = the runtime's default).
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}.")
    return Runner(read_bundle(path, verify_hashes=verify), threads)
