"""Prometheus metrics for one server (its own registry, so several apps can live in one process, as in tests).

edgesdk_requests_total{endpoint,status}, edgesdk_request_errors_total{endpoint,status},
edgesdk_inputs_total{endpoint}, edgesdk_request_latency_seconds{endpoint} (histogram),
edgesdk_batch_size (texts per runner call, histogram), edgesdk_batch_latency_seconds (runner time, histogram),
edgesdk_queue_wait_seconds (time a request waited for its batch, histogram), edgesdk_queue_depth (texts waiting).
"""

from __future__ import annotations

from ..errors import require

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", "serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("edgesdk_requests", "HTTP requests answered", ["endpoint", "status"],
                                     registry=r)
        self.errors = prom.Counter("edgesdk_request_errors", "requests answered with a 4xx/5xx status",
                                   ["endpoint", "status"], registry=r)
        self.inputs = prom.Counter("edgesdk_inputs", "texts received", ["endpoint"], registry=r)
        self.latency = prom.Histogram("edgesdk_request_latency_seconds", "request latency, body read to response",
                                      ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = prom.Histogram("edgesdk_batch_size", "texts per runner call", buckets=BATCH_BUCKETS,
                                         registry=r)
        self.batch_latency = prom.Histogram("edgesdk_batch_latency_seconds", "runner time per batch",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = prom.Histogram("edgesdk_queue_wait_seconds", "time a request waited for its batch",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = prom.Gauge("edgesdk_queue_depth", "texts waiting for a batch", registry=r)

    def observe_request(self, endpoint: str, status: int, seconds: float, inputs: int = 0) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        if inputs:
            self.inputs.labels(endpoint).inc(inputs)
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)
        for wait in waits:
            self.queue_wait.observe(wait)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
