"""Tokenization and pooling on the device, mirroring sentence-transformers `encode()`.

The bundle's tokenizer.json plus the manifest's settings (max length, static length, pad token) fully
describe tokenization; pooling (mean / cls / none) and L2 normalisation come from the manifest too.
Texts longer than `max_length` tokens are truncated, as sentence-transformers does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BundleError, InputError

if TYPE_CHECKING:
    from .manifest import TensorSpec, TokenizerInfo


def check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}.")
    if len(texts) == 0:
        raise InputError("texts is empty: pass at least one string, e.g. embed(['hello world']).")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        i, kind = bad[0]
        raise InputError(f"texts[{i}] is a {kind}, not a string ({len(bad)} non-string item(s) in all). "
                         "Convert inputs with str() or drop them before calling.")
    return [_valid_unicode(t) for t in texts]


def _valid_unicode(text: str) -> str:
    """Lone surrogates (e.g. '\\ud800' from a bad decode) cannot be tokenized: each becomes U+FFFD, the
    replacement character, as a UTF-8 decoder with errors='replace' does. Documented in the README (Python API)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class TextEncoder:
    """Turns strings into the model's integer feeds, per the manifest's tokenizer settings."""

    def __init__(self, tokenizer_json: str, settings: "TokenizerInfo", inputs: Sequence["TensorSpec"]):
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(tokenizer_json)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise BundleError(f"cannot read tokenizer '{tokenizer_json}': {exc}. Re-export the bundle.") from exc
        self.max_length = settings.max_length
        self.static_length = settings.static_length
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._pad_id = settings.pad_id
        self._tokenizer.enable_truncation(self.static_length or self.max_length)
        padding: dict[str, Any] = {"pad_id": settings.pad_id, "pad_token": settings.pad_token}
        if self.static_length:
            padding["length"] = self.static_length
        self._tokenizer.enable_padding(**padding)
        self._inputs = {spec.name: np.dtype(spec.dtype) for spec in inputs}
        unknown = [n for n in self._inputs if n not in TOKEN_COLUMNS]
        if unknown:
            raise BundleError(f"the bundle's model takes input '{unknown[0]}', which a text tokenizer does not make "
                              f"(it makes {', '.join(TOKEN_COLUMNS)}); feed it with run().")

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Feeds padded to the batch's longest text (or the static length); `pad_to`: padded to exactly that many
        tokens (InputError if a text is longer)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=dtype) for name, dtype in self._inputs.items()}
        if pad_to is None:
            return feeds
        width = next(iter(feeds.values())).shape[1]
        if width > pad_to:
            raise InputError(f"texts tokenize to {width} tokens, more than pad_to={pad_to}.")
        return {name: np.pad(a, ((0, 0), (0, pad_to - width)), constant_values=self._pad_id if name == "input_ids"
                             else 0) for name, a in feeds.items()}


def pool(hidden: np.ndarray, attention_mask: np.ndarray | None, pooling: str, normalize: bool) -> np.ndarray:
    """Pool token states [B, S, H] into sentence vectors [B, H] the way the model was trained (the mask is needed
    for mean pooling only; softmax and none also serve image and tensor models' [B, D] outputs)."""
    hidden = hidden.astype(np.float32, copy=False)
    if pooling == "mean":
        mask = attention_mask.astype(np.float32)[:, :, None]
        vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    elif pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "softmax":  # classifiers: logits [B, C] → class probabilities, the vector fidelity compares
        vectors = softmax(hidden)
    elif pooling == "none":
        vectors = hidden
    else:
        raise BundleError(f"unknown pooling '{pooling}' in the manifest; this edgesdk knows mean, cls, softmax, none.")
    if normalize:
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
    return vectors


def output_vectors(family: str, feeds: dict[str, np.ndarray], raw: np.ndarray, pooling: str,
                   normalize: bool) -> np.ndarray:
    """A model's first output as the vectors fidelity and embed() use: pooled token states for text (the mask
    says which tokens are real), class probabilities for classifiers, flattened rows for image and tensor models."""
    if family == "text":
        return pool(raw, feeds["attention_mask"], pooling, normalize)
    return pool(np.asarray(raw).reshape(len(raw), -1), None, pooling, normalize)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
