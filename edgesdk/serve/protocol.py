"""The HTTP API, independent of the web framework: TEI-style and OpenAI-style requests in, JSON replies out.

`Service.handle(method, path, body)` validates a request, gets vectors from an async `embed_rows(texts)` /
`classify_rows(texts)` (the local batcher, or Ray Serve's `@serve.batch`), and shapes the reply:

  POST /embed           {"inputs": str|[str], "normalize": bool, "truncate": bool, "dimensions": int,
                         "prompt_name": str}                                         -> [[float]]
  POST /predict         {"inputs": str|[str], "truncate": bool}   -> [{"label","score"}] per text, best first
  POST /v1/embeddings   {"input": str|[str], "model": str, "encoding_format": "float"|"base64", "dimensions": int,
                         "user": str}                  -> {"object": "list", "data": [...], "model", "usage"}
  GET  /health, /info, /metrics (Prometheus), /v1/models

Bad requests get a 4xx JSON body naming the problem (TEI: {"error", "error_type"}; OpenAI: {"error": {"message",
"type", "param", "code"}}); the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

import numpy as np

from ..runtime import encode as st
from .batching import Draining
from .info import public_info

Rows = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 128              # texts per request
    max_body_bytes: int = 2 * 1024 * 1024
    auto_truncate: bool = False        # TEI's --auto-truncate: truncate long texts instead of refusing them


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    inputs: int = 0  # texts answered, for the metrics


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "Validation"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


class Service:
    """One bundle's HTTP API; `embed_rows` / `classify_rows` return the model's rows for a list of texts."""

    def __init__(self, info: dict[str, Any], limits: Limits, *, embed_rows: Rows, classify_rows: Rows,
                 count_tokens: Callable[[list[str]], list[int]], metrics: Any = None,
                 extra_info: dict[str, Any] | None = None):
        self.info, self.limits, self.metrics = info, limits, metrics
        self._embed_rows, self._classify_rows, self._count = embed_rows, classify_rows, count_tokens
        self._extra_info = extra_info or {}
        self.draining = False
        self._routes: dict[tuple[str, str], Callable[[bytes], Awaitable[Reply]]] = {
            ("POST", "/embed"): self._embed, ("POST", "/predict"): self._predict,
            ("POST", "/v1/embeddings"): self._openai_embeddings,
            ("GET", "/health"): self._health, ("GET", "/info"): self._info, ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
        }

    # -- dispatch ----------------------------------------------------------------------------------------------
    async def handle(self, method: str, path: str, body: bytes) -> Reply:
        started = time.perf_counter()
        openai = path.startswith("/v1/")
        route = self._routes.get((method, path))
        inputs = 0
        try:
            if route is None:
                known = sorted({p for _, p in self._routes})
                if any(p == path for _, p in self._routes):
                    raise RequestError(405, f"{method} is not allowed on {path}.", kind="Validation")
                raise RequestError(404, f"no route {path}; this server has {', '.join(known)}.", kind="NotFound")
            if len(body) > self.limits.max_body_bytes:
                raise body_too_large(self.limits.max_body_bytes)
            reply = await route(body)
            inputs = reply.inputs
        except RequestError as exc:
            reply = error_reply(exc, openai)
        except Draining as exc:
            reply = error_reply(RequestError(503, str(exc), kind="Unhealthy"), openai)
        except Exception as exc:  # a runner failure must not take the server down; say what happened
            reply = error_reply(RequestError(500, f"inference failed: {type(exc).__name__}: {exc}", kind="Backend"),
                                openai)
        if self.metrics is not None and route is not None and path != "/metrics":
            self.metrics.observe_request(path, reply.status, time.perf_counter() - started, inputs)
        return reply

    # -- endpoints ---------------------------------------------------------------------------------------------
    async def _embed(self, body: bytes) -> Reply:
        request = parse_body(body, {"inputs", "normalize", "truncate", "dimensions", "prompt_name",
                                    "truncation_direction"}, required=("inputs",))
        self._require_task("embedding", "/embed", "/predict")
        texts = self._texts(request["inputs"], "inputs")
        normalize = flag(request, "normalize", True)
        truncate = flag(request, "truncate", self.limits.auto_truncate)
        if request.get("truncation_direction", "right") not in ("right", "Right"):
            raise RequestError(422, "truncation_direction must be 'right': bundles truncate at the end.",
                               "truncation_direction")
        dims = self._dimensions(request.get("dimensions"))
        texts = self._prompted(texts, request.get("prompt_name"))
        self._check_lengths(texts, truncate, "inputs")
        rows = await self._embed_rows(texts)
        vectors = st.postprocess(rows, truncate_dim=dims, normalize=normalize, already_unit=self.info["normalize"])
        return counted(json_reply(200, vectors.tolist()), len(texts))

    async def _predict(self, body: bytes) -> Reply:
        request = parse_body(body, {"inputs", "truncate", "raw_scores"}, required=("inputs",))
        self._require_task("classification", "/predict", "/embed")
        if flag(request, "raw_scores", False):
            raise RequestError(422, "raw_scores is not supported: the bundle serves class probabilities.",
                               "raw_scores")
        single = isinstance(request["inputs"], str)
        texts = self._texts(request["inputs"], "inputs")
        self._check_lengths(texts, flag(request, "truncate", self.limits.auto_truncate), "inputs")
        probabilities = await self._classify_rows(texts)
        labels = self.info["labels"]
        ranked = [[{"label": labels[i], "score": float(p[i])} for i in np.argsort(-p, kind="stable")]
                  for p in probabilities]
        return counted(json_reply(200, ranked[0] if single else ranked), len(texts))

    async def _openai_embeddings(self, body: bytes) -> Reply:
        request = parse_body(body, {"input", "model", "encoding_format", "dimensions", "user"},
                             required=("input",), status=400)
        self._require_task("embedding", "/v1/embeddings", "/predict")
        model = request.get("model")
        if model is not None and model not in (self.info["model"], self.info["bundle"]):
            raise RequestError(404, f"model '{model}' is not served here; this server serves "
                                    f"'{self.info['model']}' (bundle {self.info['bundle']}).", "model",
                               kind="model_not_found")
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise RequestError(400, f"encoding_format must be 'float' or 'base64', got {encoding!r}.",
                               "encoding_format")
        texts = self._texts(request["input"], "input", status=400)
        dims = self._dimensions(request.get("dimensions"), status=400)
        counts = self._check_lengths(texts, self.limits.auto_truncate, "input", status=400)
        rows = await self._embed_rows(texts)
        # OpenAI's shortened embeddings are re-normalised; full ones are the model's own output
        vectors = st.postprocess(rows, truncate_dim=dims, normalize=self.info["normalize"], already_unit=True)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        tokens = int(sum(min(c, self._max_tokens()) for c in counts))
        return counted(json_reply(200, {"object": "list", "data": data, "model": self.info["model"],
                                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}), len(texts))

    async def _health(self, body: bytes) -> Reply:
        if self.draining:
            return json_reply(503, {"status": "draining"})
        return json_reply(200, {"status": "ok"})

    async def _info(self, body: bytes) -> Reply:
        return json_reply(200, {**public_info(self.info), "max_inputs": self.limits.max_inputs,
                                "max_body_bytes": self.limits.max_body_bytes,
                                "auto_truncate": self.limits.auto_truncate, **self._extra_info})

    async def _metrics(self, body: bytes) -> Reply:
        if self.metrics is None:
            raise RequestError(404, "metrics are not collected by this server.", kind="NotFound")
        data, content_type = self.metrics.render()
        return Reply(200, data, content_type)

    async def _models(self, body: bytes) -> Reply:
        return json_reply(200, {"object": "list", "data": [{"id": self.info["model"], "object": "model",
                                                            "owned_by": "edgesdk"}]})

    # -- validation --------------------------------------------------------------------------------------------
    def _require_task(self, task: str, path: str, other: str) -> None:
        if self.info["task"] != task:
            raise RequestError(400, f"this bundle's task is '{self.info['task']}', so {path} cannot serve it; "
                                    f"use {other}.")

    def _texts(self, value: Any, field: str, status: int = 422) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list):
            raise RequestError(status, f"{field} must be a string or a list of strings, got "
                                       f"{type(value).__name__}.", field)
        if not texts:
            raise RequestError(status, f"{field} is empty: send at least one string.", field)
        if len(texts) > self.limits.max_inputs:
            raise RequestError(413, f"{field} has {len(texts)} texts; this server takes at most "
                                    f"{self.limits.max_inputs} per request (--max-inputs). Split the request.", field)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(status, f"{field}[{i}] is of type {type(text).__name__}, not a string "
                                           "(token arrays are not accepted; send text).", field)
            if not text:
                raise RequestError(status, f"{field}[{i}] is an empty string.", field)
        return texts

    def _dimensions(self, value: Any, status: int = 422) -> int | None:
        if value is None:
            return None
        full = self.info["dimensions"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= full:
            raise RequestError(status, f"dimensions must be an integer from 1 to {full}, got {value!r}.",
                               "dimensions")
        return value

    def _prompted(self, texts: list[str], prompt_name: Any) -> list[str]:
        if prompt_name is None:
            return texts
        prompts = self.info["prompts"]
        if not isinstance(prompt_name, str) or prompt_name not in prompts:
            raise RequestError(422, f"prompt_name {prompt_name!r} is not one of this bundle's prompts "
                                    f"{sorted(prompts)}.", "prompt_name")
        return st.apply_prompt(texts, prompts[prompt_name])

    def _max_tokens(self) -> int:
        return int(self.info["static_length"] or self.info["max_length"])

    def _check_lengths(self, texts: list[str], truncate: bool, field: str, status: int = 413) -> list[int]:
        counts = self._count(texts)
        limit = self._max_tokens()
        if not truncate:
            for i, count in enumerate(counts):
                if count > limit:
                    raise RequestError(status, f"{field}[{i}] has {count} tokens; this model takes at most "
                                               f"{limit}. Send \"truncate\": true (or start the server with "
                                               "--auto-truncate) to cut it, as sentence-transformers does.", field)
        return counts


def parse_body(body: bytes, allowed: set[str], required: tuple[str, ...], status: int = 422) -> dict[str, Any]:
    try:
        request = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc}).") from exc
    if not isinstance(request, dict):
        raise RequestError(status, f"the body must be a JSON object with {', '.join(required)}, got "
                                   f"{type(request).__name__}.")
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise RequestError(status, f"unknown field(s) {unknown}; this endpoint takes {sorted(allowed)}.", unknown[0])
    missing = [name for name in required if name not in request]
    if missing:
        raise RequestError(status, f"missing field(s) {missing}.", missing[0])
    return request


def flag(request: dict[str, Any], name: str, default: bool) -> bool:
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"{name} must be true or false, got {value!r}.", name)
    return value


def body_too_large(limit: int) -> RequestError:
    return RequestError(413, f"the body is larger than this server's limit of {limit} bytes (--max-body-bytes).")


def error_reply(exc: RequestError, openai: bool) -> Reply:
    if openai:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return json_reply(exc.status, {"error": {"message": exc.message, "type": kind, "param": exc.param,
                                                 "code": exc.kind if exc.kind != "Validation" else None}})
    return json_reply(exc.status, {"error": exc.message, "error_type": exc.kind})


def counted(reply: Reply, inputs: int) -> Reply:
    return replace(reply, inputs=inputs)
