"""Dynamic batching across concurrent requests: one queue, one worker, one runner call per batch.

Requests (each a list of texts) wait in an asyncio queue; the worker takes the first, then keeps taking more until
the batch holds `max_batch` texts or `max_wait_ms` has passed since the first arrived, runs the whole batch in
one runner call on a worker thread (so the event loop keeps accepting requests meanwhile), and hands every
request its own rows. A request is never split; one larger than `max_batch` runs alone (the runner chunks it).
While a batch runs, new requests queue up, so under load batches fill without waiting.

`stop()` drains: requests already queued are still answered, new ones are refused with `Draining`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import EdgeSDKError


class Draining(EdgeSDKError):
    """The server is shutting down and takes no new work."""


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 32       # texts per runner call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await batcher.submit(texts)` -> rows of `run(all_texts)` for these texts, batched with other requests."""

    def __init__(self, run: Callable[[list[str]], np.ndarray], options: BatchOptions = BatchOptions(),
                 metrics: Any = None):
        if options.max_batch < 1 or options.max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {options}")
        self._run, self.options, self._metrics = run, options, metrics
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._carry: _Item | None = None
        self._queued_texts = 0
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgesdk-batch")
        self._closing = False

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, texts: list[str]) -> np.ndarray:
        if self._closing:
            raise Draining("the server is shutting down; retry on another replica.")
        self.start()
        item = _Item(list(texts), asyncio.get_running_loop().create_future())
        self._queued_texts += len(item.texts)
        self._set_depth()
        await self._queue.put(item)
        return await item.future

    async def stop(self) -> None:
        """Answer everything already queued, then stop the worker."""
        self._closing = True
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            if first is None:
                return
            batch, count, stopping = [first], len(first.texts), False
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while count < self.options.max_batch:
                try:
                    item = await self._next(max(0.0, deadline - loop.time()) if self._queue.empty() else 0.001)
                except TimeoutError:
                    break
                if item is None:
                    stopping = True
                    break
                if count + len(item.texts) > self.options.max_batch:
                    self._carry = item  # starts the next batch; requests are never split
                    break
                batch.append(item)
                count += len(item.texts)
            await self._execute(loop, batch, count)
            if stopping:
                while self._carry is not None or not self._queue.empty():  # drain what arrived before the stop
                    item = await self._next(None)
                    if item is not None:
                        await self._execute(loop, [item], len(item.texts))
                return

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], count: int) -> None:
        self._queued_texts -= count
        self._set_depth()
        texts = [text for item in batch for text in item.texts]
        started = time.perf_counter()
        try:
            rows = await loop.run_in_executor(self._executor, self._run, texts)
        except Exception as exc:  # every request in the batch gets the runner's error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._metrics is not None:
            self._metrics.observe_batch(count, time.perf_counter() - started,
                                        [started - item.queued for item in batch])
        offset = 0
        for item in batch:
            if not item.future.done():  # a client that disconnected cancelled its future
                item.future.set_result(rows[offset:offset + len(item.texts)])
            offset += len(item.texts)

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queued_texts)
