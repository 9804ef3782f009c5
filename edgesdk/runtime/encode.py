"""sentence-transformers parity for the runner: prompts, truncate_dim, normalisation, quantized precisions, similarity.

Pure numpy functions behind `Runner.encode()` / `encode_query()` / `encode_document()` / `similarity()`, written to
the semantics of sentence-transformers 6.x `encode()` so an app can swap `SentenceTransformer(path)` for
`edgesdk.runtime.load(bundle)`: the prompt is prepended to each text, then the pooled vectors are truncated to
`truncate_dim`, then L2-normalised when asked, then quantized (`quantize_embeddings`' rules: int8/uint8 buckets
from `ranges`, else from `calibration_embeddings`, else from the batch itself; binary/ubinary pack the sign bits).
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from ..errors import InputError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
T = TypeVar("T")


def resolve_prompt(prompts: Mapping[str, str], prompt: str | None, prompt_name: str | None,
                   default_prompt_name: str | None = None) -> str | None:
    """The prompt string to prepend: an explicit `prompt` wins, then `prompt_name`, then the model's default."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}.")
        return prompt
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise InputError(f"prompt_name '{prompt_name}' is not one of this bundle's prompts "
                             f"{sorted(prompts)}; pass prompt='...' instead, or one of those names.")
        return prompts[prompt_name]
    if default_prompt_name is not None:
        return prompts.get(default_prompt_name)
    return None


def first_prompt_name(prompts: Mapping[str, str], candidates: Sequence[str]) -> str | None:
    """encode_query / encode_document: the first of the candidate prompt names the model has (ST's order)."""
    return next((name for name in candidates if name in prompts), None)


def apply_prompt(texts: list[str], prompt: str | None) -> list[str]:
    return [prompt + text for text in texts] if prompt else texts


def truncate_embeddings(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """Keep the first `dim` dimensions (Matryoshka truncation); None keeps them all."""
    if dim is None:
        return embeddings
    full = embeddings.shape[-1]
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= full:
        raise InputError(f"truncate_dim must be an integer from 1 to {full} (this model's dimensions), got {dim!r}.")
    return embeddings[..., :dim]


def normalize_embeddings(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return (embeddings / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


def quantization_ranges(embeddings: np.ndarray, precision: str,
                        calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension [min; max] buckets [2, D] for int8/uint8: from the calibration set, else the batch."""
    source = embeddings if calibration_embeddings is None else np.asarray(calibration_embeddings, dtype=np.float32)
    if source.ndim == 1 or source.shape[0] < 2:
        raise InputError(f"cannot compute {precision} ranges from a single embedding: pass ranges=[2, D] or "
                         "calibration_embeddings from a representative set of texts.")
    return np.vstack((source.min(axis=0), source.max(axis=0)))


def quantize_embeddings(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """sentence_transformers.quantize_embeddings for numpy: float32, int8, uint8, binary, ubinary."""
    if precision not in PRECISIONS:
        raise InputError(f"precision '{precision}' is not supported; use one of {', '.join(PRECISIONS)}.")
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise InputError("embeddings to quantize must be float, not already int8/uint8.")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            ranges = quantization_ranges(embeddings, precision, calibration_embeddings)
        ranges = np.asarray(ranges, dtype=np.float32)
        if ranges.shape != (2, embeddings.shape[-1]):
            raise InputError(f"ranges must have shape (2, {embeddings.shape[-1]}) (min row, max row), "
                             f"got {ranges.shape}.")
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed


def postprocess(embeddings: np.ndarray, *, truncate_dim: int | None = None, normalize: bool = False,
                already_unit: bool = False, precision: str = "float32", ranges: np.ndarray | None = None,
                calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """ST's order after pooling: truncate, normalise, quantize.

    already_unit: the model itself ends in L2 normalisation, so normalising again is skipped unless truncation
    changed the length (which keeps vectors bit-identical to `embed()` when nothing would change them).
    """
    truncated = truncate_embeddings(embeddings, truncate_dim)
    if normalize and not (already_unit and truncated.shape[-1] == embeddings.shape[-1]):
        truncated = normalize_embeddings(truncated)
    return quantize_embeddings(truncated, precision, ranges, calibration_embeddings)


def similarity(a: np.ndarray, b: np.ndarray, function: str = "cosine") -> np.ndarray:
    """Pairwise similarity matrix [len(a), len(b)], as SentenceTransformer.similarity (euclidean/manhattan negated)."""
    if function not in SIMILARITIES:
        raise InputError(f"similarity function '{function}' is not supported; use one of {', '.join(SIMILARITIES)}.")
    a = np.atleast_2d(np.asarray(a, dtype=np.float32))
    b = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"embeddings have different dimensions ({a.shape[-1]} vs {b.shape[-1]}).")
    if function == "cosine":
        return normalize_embeddings(a) @ normalize_embeddings(b).T
    if function == "dot":
        return a @ b.T
    diff = a[:, None, :] - b[None, :, :]
    if function == "euclidean":
        return -np.sqrt((diff ** 2).sum(axis=-1))
    return -np.abs(diff).sum(axis=-1)


def progress(batches: Iterable[T], total: int, enabled: bool) -> Iterator[T]:
    """Batches with an optional progress line on stderr (tqdm when installed; the device may not have it)."""
    if not enabled:
        yield from batches
        return
    try:
        from tqdm import tqdm
    except ImportError:
        for done, start in enumerate(batches, 1):
            yield start
            print(f"\rBatches: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
        return
    yield from tqdm(batches, total=total, desc="Batches")
