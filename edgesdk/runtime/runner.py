"""The thin runner: one Runner over any backend session, with tokenization, batching and pooling.

The backend's runtime module (`edgesdk/runtime/<backend>.py`, found by the registry) opens the session; the Runner
validates feeds against the manifest's input specs (names, ranks, static dims, dtypes, token ids inside the
vocabulary, ids and mask of one shape, the sequence limit), sorts texts by token count and batches them like
sentence-transformers `encode()` (results come back in input order), and pools outputs. Runners are thread-safe:
sessions are created per thread where the runtime needs it, and nothing mutable is shared between calls.
Anything a runtime still raises on a validated feed is wrapped in an InferenceError naming the feed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EdgeSDKError, InferenceError, InputError
from . import encode as st
from .manifest import Bundle, read_bundle
from .image import ImagePreprocessor, check_images
from .registry import Session, runtime_backend
from .text import TextEncoder, check_texts, output_vectors, softmax


@dataclass(frozen=True)
class Classification:
    labels: list[str]
    probabilities: np.ndarray  # [N, num_labels]
    label_names: list[str]


class Runner:
    """Runs a bundle: `run(feeds)`; `embed(items)` (alias `encode`) and `classify(items)` take texts for text
    bundles and images (paths, PIL images, H×W×3 uint8 arrays) for image bundles."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.threads = threads
        self.inputs = self.manifest.inputs
        self.outputs = self.manifest.outputs
        model = self.manifest.model
        self.pooling, self.normalize, self.task, self.family = model.pooling, model.normalize, model.task, model.family
        self._encoder = TextEncoder(str(bundle.file(self.manifest.tokenizer.path)), self.manifest.tokenizer,
                                    self.inputs) if self.manifest.tokenizer is not None else None
        self._images = ImagePreprocessor(self.manifest.preprocessing) if self.manifest.preprocessing else None
        self._session: Session = runtime_backend(bundle.backend).open_session(bundle, threads)
        self._lock = threading.Lock()

    # -- raw tensors -------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run raw feeds (names, ranks and dtypes as in manifest.inputs) and return the raw outputs."""
        return self._infer(self._check_feeds(feeds))

    def tokenize(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """The model's integer feeds for texts: padded to the longest text, or to exactly `pad_to` tokens."""
        if self._encoder is None:
            raise InputError(f"this bundle's model takes {self.family} inputs, not text; "
                             + ("use preprocess(images)." if self._images else "feed it with run()."))
        return self._encoder(check_texts(texts), pad_to)

    def preprocess(self, images: Any) -> dict[str, np.ndarray]:
        """The model's float feed for images (paths, PIL images or uint8 arrays), as the bundle preprocesses."""
        if self._images is None:
            raise InputError(f"this bundle's model takes {self.family} inputs, not images; "
                             + ("use tokenize(texts)." if self._encoder else "feed it with run()."))
        return self._images(check_images(images))

    @property
    def static_lengths(self) -> tuple[int, ...]:
        """The sequence lengths the artefact is compiled for (() = any); a batch runs in the smallest that fits."""
        return tuple(runtime_backend(self.bundle.backend).static_lengths(self.bundle.settings))

    @property
    def static_batches(self) -> tuple[tuple[int, int], ...]:
        """The static [batch >= 2, length] shapes the artefact also has (batched signatures); a batch of exactly
        that many rows at that length runs in it."""
        return tuple(runtime_backend(self.bundle.backend).static_batches(self.bundle.settings))

    # -- sentence level ----------------------------------------------------------------------------------------
    def embed(self, items: Any, batch_size: int = 32) -> np.ndarray:
        """Embeddings [N, D]: sentence embeddings pooled and normalised as the model was trained (like ST
        `encode()`) for texts; the model's feature vector (flattened) for images."""
        items = self._items(items)
        self._require_task("embedding")
        return self._batched(items, batch_size, self._embed_batch)

    def classify(self, items: Any, batch_size: int = 32) -> Classification:
        """Labels and class probabilities for texts (text bundles) or images (image bundles)."""
        items = self._items(items)
        self._require_task("classification")
        probs = softmax(self._batched(items, batch_size, self._first_output))
        names = list(self.manifest.model.labels) or [str(i) for i in range(probs.shape[1])]
        return Classification([names[i] for i in probs.argmax(axis=1)], probs, names)

    def _require_task(self, task: str) -> None:
        if self.task == task:
            return
        if task == "embedding":
            raise InputError(f"this bundle's task is '{self.task}', not 'embedding'; use classify() or run().")
        raise InputError(f"this bundle's task is '{self.task}': it has no classification head, so classify() "
                         "cannot run. Export a model with a classification head, or use embed().")

    def _items(self, items: Any) -> list:
        if self._encoder is not None:
            return check_texts(items)
        if self._images is not None:
            return check_images(items)
        raise InputError(f"this bundle's model takes raw tensors (family '{self.family}'); feed it with run(feeds).")

    def _batched(self, items: list, batch_size: int, run: Callable[[dict[str, np.ndarray]], np.ndarray],
                 show_progress: bool = False) -> np.ndarray:
        """Run items in batches and return the rows in input order. Texts are tokenized once and batched longest
        token count first (sentence-transformers sorts by characters): a batch pads to its own longest text, so
        sorting saves the padding a mixed corpus would pay for. Images are all one size: they keep their order."""
        _check_batch(batch_size)
        if self._encoder is not None:
            batches = self._encoder.batches(items, batch_size)
        else:
            batches = ((np.arange(j, min(j + batch_size, len(items))), self._images(items[j:j + batch_size]))
                       for j in range(0, len(items), batch_size))
        out = None
        for rows, feeds in st.progress(batches, -(-len(items) // batch_size), show_progress):
            values = run(feeds)
            if out is None:
                out = np.empty((len(items), *values.shape[1:]), dtype=values.dtype)
            out[rows] = values
        return out

    def _embed_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.postprocess(feeds, self._infer(feeds)[self.outputs[0].name])

    def postprocess(self, feeds: dict[str, np.ndarray], raw: np.ndarray) -> np.ndarray:
        """The model's first output as the vectors fidelity compares: pooled token states for text, class
        probabilities for classifiers, flattened rows for image and tensor models."""
        return output_vectors(self.family, feeds, raw, self.pooling, self.normalize)

    def _first_output(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._infer(feeds)[self.outputs[0].name].astype(np.float32)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = self.inputs[0].static[0] if self.inputs[0].static else None
        rows = len(next(iter(feeds.values())))
        if self.family != "text" and batch is not None and rows > batch:  # an artefact with a static batch size
            parts = [self._infer({k: v[i:i + batch] for k, v in feeds.items()}) for i in range(0, rows, batch)]
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        try:
            return self._session.infer(feeds)
        except EdgeSDKError:
            raise
        except Exception as exc:  # a runtime's own error type on a feed that passed validation
            shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in feeds.items())
            raise InferenceError(f"the {self.bundle.backend} runtime failed on feeds [{shapes}]: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, dict):
            raise InputError(f"feeds must be a dict of name -> array, got {type(feeds).__name__}.")
        expected = {spec.name: spec for spec in self.inputs}
        missing, extra = expected.keys() - feeds.keys(), feeds.keys() - expected.keys()
        if missing or extra:
            raise InputError(f"feeds have names {sorted(map(str, feeds))}; the model takes {sorted(expected)} "
                             f"(missing {sorted(missing)}, unexpected {sorted(map(str, extra))}).")
        checked = {}
        for name, spec in expected.items():
            try:
                array = np.asarray(feeds[name])
            except (ValueError, TypeError) as exc:
                raise InputError(f"feed '{name}' is not an array ({exc}).") from None
            if array.ndim != len(spec.shape):
                raise InputError(f"feed '{name}' has shape {array.shape}; the model wants rank {len(spec.shape)} "
                                 f"({list(spec.shape)}).")
            for axis, dim in enumerate(spec.static):
                if dim is not None and array.shape[axis] != dim:
                    raise InputError(f"feed '{name}' has shape {array.shape}; axis {axis} must be {dim} "
                                     f"(static shape {list(spec.shape)}).")
            if np.issubdtype(np.dtype(spec.dtype), np.integer) and not np.issubdtype(array.dtype, np.integer):
                raise InputError(f"feed '{name}' has dtype {array.dtype}; the model wants {spec.dtype}"
                                 f"{' token ids' if self.family == 'text' else ''}.")
            if np.issubdtype(np.dtype(spec.dtype), np.floating):
                if not np.issubdtype(array.dtype, np.floating):
                    hint = " Use classify(images) / embed(images) for raw pixels." if self._images else ""
                    raise InputError(f"feed '{name}' has dtype {array.dtype}; the model wants {spec.dtype} values."
                                     + hint)
                if not np.isfinite(array).all():
                    raise InputError(f"feed '{name}' holds NaN or infinite values; the model needs finite numbers.")
            if array.size == 0:
                what = "batch size 0" if array.shape and array.shape[0] == 0 else "a zero-length axis"
                raise InputError(f"feed '{name}' is empty (shape {array.shape}: {what}); pass at least one row.")
            checked[name] = array
        if self.family == "text":
            self._check_tokens(checked)
        return {name: checked[name].astype(expected[name].dtype, copy=False) for name in expected}

    def _check_tokens(self, feeds: dict[str, np.ndarray]) -> None:
        shapes = {name: a.shape for name, a in feeds.items()}
        if len(set(shapes.values())) > 1:
            raise InputError(f"feeds must all have one shape [batch, sequence]; got {shapes}.")
        limit = self.manifest.tokenizer.static_length or self.manifest.tokenizer.max_length
        shape = next(iter(shapes.values()))
        if len(shape) >= 2 and shape[1] > limit:
            raise InputError(f"feeds have sequence length {shape[1]}; this bundle takes at most {limit} tokens "
                             "(tokenize() truncates texts to it).")
        if len(shape) >= 1 and shape[0] == 0:
            raise InputError("feeds have batch size 0; pass at least one row.")
        ids = feeds.get("input_ids")
        vocab = self._encoder.vocab_size
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise InputError(f"feed 'input_ids' holds token id {int(bad)}; ids must be in [0, {vocab}) (this "
                             "bundle's vocabulary). Make ids with runner.tokenize(texts).")
        for name in ("attention_mask", "token_type_ids"):
            array = feeds.get(name)
            if array is not None and array.size and (array.min() < 0 or array.max() > 1):
                raise InputError(f"feed '{name}' must hold only 0 and 1, got values from {int(array.min())} to "
                                 f"{int(array.max())}.")

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
        return dict(self.manifest.model.prompts)

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32, *, prompt_name: str | None = None,
               prompt: str | None = None, normalize_embeddings: bool = False, truncate_dim: int | None = None,
               precision: str = "float32", ranges: np.ndarray | None = None,
               calibration_embeddings: np.ndarray | None = None, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray | list[np.ndarray]:
        """Like SentenceTransformer.encode(): [N, D] (or [D] for one string); see edgesdk.runtime.encode."""
        texts = check_texts(sentences)
        chosen = st.resolve_prompt(self.prompts, prompt, prompt_name, self.manifest.model.default_prompt_name)
        texts = st.apply_prompt(texts, chosen)
        self._require_task("embedding")
        vectors = self._batched(texts, batch_size, self._embed_batch, show_progress_bar)
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
        return st.similarity(a, b, self.manifest.model.similarity_fn_name or "cosine")


def _check_batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def load(path: str | Path, threads: int | None = None, *, verify: bool = True, trusted_keys=None) -> Runner:
    """Open a bundle folder (verifying every file's sha256) and return a Runner for its backend.

    threads: intra-op threads for the runtime (None = the runtime's default).
    trusted_keys: Ed25519 public keys (PEM paths or bytes); when given, the bundle must be signed by one of them.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}.")
    bundle = read_bundle(path, verify_hashes=verify or trusted_keys is not None)
    if trusted_keys is not None:  # signed by one of these keys, or BundleError (see signing.py)
        from .signing import require_signature

        require_signature(bundle, trusted_keys)
    return Runner(bundle, threads)
