"""`edgesdk serve`: one bundle behind HTTP (Starlette + uvicorn) with dynamic batching and Prometheus metrics.

    from edgesdk.serve import ServeOptions, build_app
    app = build_app("dist/all-minilm-l6-v2-onnxruntime-int8", ServeOptions(max_batch=32, max_wait_ms=5))

The app owns one Runner and one Batcher; `protocol.Service` does the HTTP API. A batch (up to max_batch texts
from concurrent requests) is sorted by token length and run in calls of runner_batch texts. Calls mix lengths
(padded to the longest) only when padding provably does not change a text's vector on this bundle: at start-up a
short text is run alone and beside a long one, and unless the two vectors are bit-identical, calls hold texts of
one token length only (no padding at all). `GET /info` says which mode is on.
Binds 127.0.0.1 unless told otherwise; SIGTERM stops accepting, answers what is in flight, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, require
from ..runtime import Runner, load
from .batching import Batcher, BatchOptions
from .info import bundle_info
from .metrics import Metrics
from .protocol import Limits, Reply, RequestError, Service, body_too_large, error_reply

log = logging.getLogger("edgesdk.serve")
BATCHING_MODES = ("auto", "padded", "by-length")
PROBE_SHORT = "edge"
PROBE_LONG = "a much longer sentence, padded beside the short one, to see whether padding moves its vector " * 2


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = 32     # texts the batcher collects across requests
    max_wait_ms: float = 5.0
    runner_batch: int = 8   # texts per runner call, sorted by length (CPU: larger padded calls are slower per text)
    threads: int | None = None
    max_inputs: int = 128
    max_body_bytes: int = 2 * 1024 * 1024
    auto_truncate: bool = False
    batching: str = "auto"  # auto | padded | by-length

    def check(self) -> "ServeOptions":
        for name in ("max_batch", "runner_batch", "max_inputs", "max_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}.")
        if self.batching not in BATCHING_MODES:
            raise InputError(f"batching must be one of {', '.join(BATCHING_MODES)}, got {self.batching!r}.")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be 0-65535, got {self.port!r}.")
        return self

    @property
    def limits(self) -> Limits:
        return Limits(self.max_inputs, self.max_body_bytes, self.auto_truncate)


class TokenCounter:
    """Untruncated token counts (special tokens included), to refuse or report long texts before batching."""

    def __init__(self, tokenizer_json: str, limit: int):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(tokenizer_json)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.limit = limit

    def __call__(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=True)]

    def lengths(self, texts: list[str]) -> list[int]:
        """The sequence length each text gets in the runner (truncated to the limit)."""
        return [min(n, self.limit) for n in self(texts)]


def rows_function(runner: Runner, info: dict[str, Any], counter: TokenCounter, mode: str,
                  runner_batch: int) -> Callable[[list[str]], np.ndarray]:
    """texts -> the model's rows (pooled vectors or class probabilities) for one batch of the batcher.

    The batch's texts are sorted by token length and run in calls of at most `runner_batch` texts, so little
    compute goes to padding; "by-length" additionally never mixes two lengths in one call (no padding at all).
    "plain" runs the texts as given, in one call per runner_batch (the reference for the padding probe).
    """
    if info["task"] == "classification":
        def run(texts: list[str]) -> np.ndarray:
            return runner.classify(texts, batch_size=runner_batch).probabilities
    else:
        def run(texts: list[str]) -> np.ndarray:
            return runner.embed(texts, batch_size=runner_batch)
    if mode == "plain" or info["static_length"]:  # static shapes pad every text to the same length anyway
        return run

    def sorted_calls(texts: list[str]) -> np.ndarray:
        lengths = counter.lengths(texts)
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        calls, current = [], []
        for index in order:
            if current and (len(current) == runner_batch or
                            (mode == "by-length" and lengths[index] != lengths[current[0]])):
                calls.append(current)
                current = []
            current.append(index)
        calls.append(current)
        rows: np.ndarray | None = None
        for indices in calls:
            part = run([texts[i] for i in indices])
            if rows is None:
                rows = np.empty((len(texts),) + part.shape[1:], dtype=part.dtype)
            rows[indices] = part
        return rows

    return sorted_calls


def padding_changes_results(run: Callable[[list[str]], np.ndarray]) -> bool:
    """Does padding a text beside a longer one change its row? (bit-exact comparison)."""
    alone = run([PROBE_SHORT])[0]
    padded = run([PROBE_SHORT, PROBE_LONG])[0]
    return not np.array_equal(alone, padded)


def choose_batching(runner: Runner, info: dict[str, Any], counter: TokenCounter, options: ServeOptions) -> str:
    if options.batching != "auto":
        return options.batching
    if info["static_length"]:
        return "padded"
    plain = rows_function(runner, info, counter, "plain", options.runner_batch)
    mode = "by-length" if padding_changes_results(plain) else "padded"
    log.info("batching: %s (padding %s a text's vector on this bundle)", mode,
             "changes" if mode == "by-length" else "does not change")
    return mode


class LocalEngine:
    """A Runner + Batcher + Service for one process."""

    def __init__(self, bundle: str | Path | Runner, options: ServeOptions):
        self.options = options.check()
        self.runner = bundle if isinstance(bundle, Runner) else load(bundle, threads=options.threads)
        self.info = bundle_info(self.runner)
        self.counter = TokenCounter(self.info["tokenizer_path"], int(self.info["static_length"]
                                                                     or self.info["max_length"]))
        self.batching = choose_batching(self.runner, self.info, self.counter, options)
        self.metrics = Metrics()
        run = rows_function(self.runner, self.info, self.counter, self.batching, options.runner_batch)
        self.batcher = Batcher(run, BatchOptions(options.max_batch, options.max_wait_ms), self.metrics)
        self.service = Service(self.info, options.limits, embed_rows=self.batcher.submit,
                               classify_rows=self.batcher.submit, count_tokens=self.counter, metrics=self.metrics,
                               extra_info={"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms,
                                           "runner_batch": options.runner_batch, "batching": self.batching,
                                           "threads": options.threads,
                                           "replicas": 1})

    async def startup(self) -> None:
        self.batcher.start()

    async def shutdown(self) -> None:
        self.service.draining = True
        await self.batcher.stop()
        self.runner.close()


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) one over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def respond(service: Service, request: Any, limit: int) -> Any:
    """Starlette request -> Service -> Starlette response (shared by the local app and the Ray deployment)."""
    from starlette.responses import Response

    path = request.url.path.rstrip("/") or "/"
    try:
        body = await read_body(request, limit) if request.method == "POST" else b""
        reply: Reply = await service.handle(request.method, path, body)
    except RequestError as exc:
        reply = error_reply(exc, path.startswith("/v1/"))
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def build_app(bundle: str | Path | Runner, options: ServeOptions = ServeOptions()) -> Any:
    """A Starlette app serving the bundle (the runner loads now; the batcher starts with the app)."""
    require("starlette", "serve")
    require("prometheus_client", "serve")
    from starlette.applications import Starlette
    from starlette.routing import Route

    engine = LocalEngine(bundle, options)

    async def endpoint(request):
        return await respond(engine.service, request, options.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await engine.startup()
        yield
        await engine.shutdown()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)], lifespan=lifespan)
    app.state.engine = engine
    return app


def serve(bundle: str | Path, options: ServeOptions = ServeOptions()) -> int:
    """Run the server until SIGTERM / Ctrl-C; in-flight requests are answered before it exits (status 0)."""
    uvicorn = require("uvicorn", "serve")
    app = build_app(bundle, options)
    engine = app.state.engine
    log.info("serving %s (%s, %s %s) on http://%s:%d", engine.info["bundle"], engine.info["task"],
             engine.info["backend"], engine.info["precision"], options.host, options.port)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler it found: make that one a no-op, so a
    # drained shutdown exits 0 instead of dying by the signal
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        asyncio.run(server.serve())
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
