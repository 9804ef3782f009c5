"""Ray Serve scale-out: the same HTTP API, one Runner per replica, batching by `@serve.batch`.

    edgesdk serve BUNDLE --ray --replicas 2                          # a local Ray cluster, stopped on exit
    edgesdk serve BUNDLE --ray --address ray://head:10001 --replicas 8
    serve run edgesdk.serve.ray:build_app bundle=/data/bundles/all-minilm-l6-v2-onnxruntime-int8 replicas=2

Each replica loads the bundle from its own disk (the path must exist on every node), so a replica is exactly the
local server's engine: `protocol.Service` for the API, `app.rows_function` for the runner calls. `@serve.batch`
groups concurrent *requests* (max_batch of them, waiting at most max_wait_ms); the runner then chunks the texts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, require

require("ray", "serve")
from ray import serve  # noqa: E402  (this module is only imported for --ray / `serve run`)

log = logging.getLogger("edgesdk.serve")
APP_NAME = "edgesdk"


@dataclass(frozen=True)
class RayOptions:
    replicas: int = 1
    address: str | None = None   # None: start a local cluster; "auto" or "ray://host:10001": join one
    num_cpus: int | None = None  # CPUs of a local cluster (None: all)


class Replica:
    """One Ray Serve replica: a Runner, a Service, and `@serve.batch`-ed runner calls."""

    def __init__(self, bundle: str, options: dict[str, Any]):
        from ..runtime import load
        from .app import ServeOptions, TokenCounter, choose_batching, rows_function
        from .info import bundle_info
        from .protocol import Service

        self.options = ServeOptions(**options).check()
        self.runner = load(bundle, threads=self.options.threads)
        info = bundle_info(self.runner)
        counter = TokenCounter(info["tokenizer_path"], int(info["static_length"] or info["max_length"]))
        mode = choose_batching(self.runner, info, counter, self.options)
        self._run = rows_function(self.runner, info, counter, mode, self.options.runner_batch)
        self.rows.set_max_batch_size(self.options.max_batch)
        self.rows.set_batch_wait_timeout_s(self.options.max_wait_ms / 1000)
        self.service = Service(info, self.options.limits, embed_rows=self.rows, classify_rows=self.rows,
                               count_tokens=counter,
                               extra_info={"max_batch": self.options.max_batch, "max_wait_ms": self.options.max_wait_ms,
                                           "runner_batch": self.options.runner_batch,
                                           "batching": f"ray serve.batch, {mode}", "threads": self.options.threads,
                                           "replica": _replica_name()})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)  # set from the options in __init__
    async def rows(self, requests: list[list[str]]) -> list[np.ndarray]:
        texts = [text for request in requests for text in request]
        rows = await asyncio.get_running_loop().run_in_executor(None, self._run, texts)
        out, offset = [], 0
        for request in requests:
            out.append(rows[offset:offset + len(request)])
            offset += len(request)
        return out

    async def __call__(self, request: Any) -> Any:
        from .app import respond

        return await respond(self.service, request, self.options.max_body_bytes)


def _replica_name() -> str:
    context = serve.get_replica_context()
    return str(getattr(context, "replica_tag", None) or getattr(context, "replica_id", ""))


def _deployment(replicas: int, options: dict[str, Any]):
    return serve.deployment(Replica, name="EdgeSDKReplica", num_replicas=replicas,
                            max_ongoing_requests=max(2 * options["max_batch"], 16),
                            ray_actor_options={"num_cpus": options.get("threads") or 1})


def build_app(bundle: str | dict[str, Any]):
    """The Ray Serve application for `serve run edgesdk.serve.ray:build_app bundle=PATH [replicas=N] ...`.

    bundle: a path, or the dict `serve run` passes: bundle=..., replicas=..., and ServeOptions fields such as
    max_batch, max_wait_ms, runner_batch, threads, max_inputs, auto_truncate (as strings). Ray wants exactly one
    parameter here.
    """
    from .app import ServeOptions

    if not isinstance(bundle, dict):
        return application(bundle, 1, ServeOptions())
    args = dict(bundle)
    if "bundle" not in args:
        raise InputError("build_app needs bundle=PATH, e.g. serve run edgesdk.serve.ray:build_app bundle=dist/b")
    path, replicas = args.pop("bundle"), int(args.pop("replicas", 1))
    settings = asdict(ServeOptions())
    for key, value in args.items():
        if key not in settings:
            raise InputError(f"unknown build_app argument '{key}'; use bundle, replicas or {sorted(settings)}.")
        settings[key] = _parse(value, settings[key])
    return application(path, replicas, ServeOptions(**settings))


def application(bundle: str | Path, replicas: int, options: Any):
    """The bound deployment: `replicas` replicas of the bundle with these ServeOptions."""
    options.check()
    if not isinstance(replicas, int) or replicas < 1:
        raise InputError(f"replicas must be a positive integer, got {replicas!r}.")
    if not Path(bundle).is_dir():
        raise InputError(f"bundle '{bundle}' is not a folder here (every Ray node needs it at the same path).")
    return _deployment(replicas, asdict(options)).bind(str(Path(bundle).resolve()), asdict(options))


def _parse(value: Any, current: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(current, int) or value.isdigit():
        return int(value)
    if isinstance(current, float):
        return float(value)
    return value


def serve_ray(bundle: str, options: Any, ray_options: RayOptions) -> int:
    """Start (or join) Ray, run the app on options.host:options.port until SIGTERM / Ctrl-C, then shut it down."""
    import ray

    app = application(bundle, ray_options.replicas, options)
    stop = threading.Event()
    local = ray_options.address is None
    ray.init(address=ray_options.address, num_cpus=ray_options.num_cpus if local else None,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    # after ray.init: Ray's core installs a crash handler on SIGTERM (abort, status 134); ours drains instead
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        log.info("serving %s on http://%s:%d with Ray Serve (%d replica(s))", Path(bundle).name, options.host,
                 options.port, ray_options.replicas)
        while not stop.wait(0.5):
            pass
        log.info("draining and shutting down Ray Serve")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
