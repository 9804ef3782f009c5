"""Tokenization and pooling on the device, mirroring sentence-transformers `encode()`.

The bundle's tokenizer.json plus the manifest's settings (max length, static length, pad token) fully
describe tokenization; pooling (mean / cls / none) and L2 normalisation come from the manifest too.
Texts longer than `max_length` tokens are truncated, as sentence-transformers does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

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
ENCODE_CHUNK = 4096  # texts tokenized per call when a whole corpus is batched


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
        self._tokenizer.no_padding()  # rows are padded here: to a batch's longest, the static length or pad_to
        self._inputs = {spec.name: np.dtype(spec.dtype) for spec in inputs}
        unknown = [n for n in self._inputs if n not in TOKEN_COLUMNS]
        if unknown:
            raise BundleError(f"the bundle's model takes input '{unknown[0]}', which a text tokenizer does not make "
                              f"(it makes {', '.join(TOKEN_COLUMNS)}); feed it with run().")

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Feeds padded to the batch's longest text (or the static length); `pad_to`: padded to exactly that many
        tokens (InputError if a text is longer)."""
        return self.pad(self.encode(texts), pad_to)

    def encode(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's (token ids, token type ids), truncated, not padded."""
        return [(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64))
                for e in self._tokenizer.encode_batch(list(texts))]

    def pad(self, rows: Sequence[tuple[np.ndarray, np.ndarray]], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Encoded rows as the model's feeds: right-padded (pad id, mask 0, type 0) to the longest row, the static
        length, or exactly `pad_to` tokens."""
        width = self.static_length or max(len(ids) for ids, _ in rows)
        if pad_to is not None:
            if width > pad_to:
                raise InputError(f"texts tokenize to {width} tokens, more than pad_to={pad_to}.")
            width = pad_to
        columns = {"input_ids": np.full((len(rows), width), self._pad_id, dtype=np.int64),
                   "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
                   "token_type_ids": np.zeros((len(rows), width), dtype=np.int64)}
        for i, (ids, types) in enumerate(rows):
            columns["input_ids"][i, :len(ids)] = ids
            columns["attention_mask"][i, :len(ids)] = 1
            columns["token_type_ids"][i, :len(ids)] = types
        return {name: columns[name].astype(dtype, copy=False) for name, dtype in self._inputs.items()}

    def batches(self, texts: Sequence[str], batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(row indices, feeds) per batch: every text tokenized once, longest token count first, so each batch pads
        only to its own longest row (sorting by characters, as sentence-transformers does, padded STS-B dev to
        57 501 tokens for 42 282 real ones at batch 32; by tokens, 43 262). Feeds are padded batch by batch."""
        rows = [row for start in range(0, len(texts), ENCODE_CHUNK) for row in
                self.encode(texts[start:start + ENCODE_CHUNK])]  # the tokenizer's own objects live a chunk long
        order = np.argsort([-len(ids) for ids, _ in rows], kind="stable")
        for start in range(0, len(rows), batch_size):
            chosen = order[start:start + batch_size]
            yield chosen, self.pad([rows[i] for i in chosen])


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
