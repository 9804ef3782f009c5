"""The benchmark harness: one JSON schema for every target, runnable on the device with the runtime alone.

Follows trtexec / benchmark_app / benchmark_model conventions: load time, first inference, warm-up, then timed
iterations until both a count and a duration are reached; latency min/p50/p90/p95/p99/max, throughput, peak RSS
(and the RSS increase over the process's idle RSS before loading). With `--vs`, two bundles run interleaved
(A, B, A, B, ...) in one process so a noisy, shared CPU hurts both equally.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .runner import Runner, load

SCHEMA = "edgesdk.bench/1"
BENCH_TEXT = ("Edge devices run neural networks close to the data, where memory, power and latency budgets are "
              "tight, so every model is quantized, fused and measured before it ships. ") * 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process image's RSS high-water mark. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec,
    so a child of a big parent would report the parent's peak; VmHWM belongs to the new address space."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class BenchConfig:
    threads: int = 1
    batch: int = 1
    seq: int = 128
    warmup: int = 10
    iterations: int = 50
    duration_s: float = 0.0  # keep going until both iterations and duration are reached


@dataclass
class BenchResult:
    bundle: str
    backend: str
    precision: str
    config: dict[str, Any]
    load_s: float
    first_inference_ms: float
    latency_ms: dict[str, float]
    throughput_seq_per_s: float
    rss_idle_mb: float
    rss_after_load_mb: float
    peak_rss_mb: float
    iterations: int
    samples_ms: list[float] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples_ms")
        return data


def feeds_for(runner: Runner, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Real tokens from a long text, cut to exactly `seq` (or the bundle's static length); for image and tensor
    bundles, the first golden input (a real preprocessed image or tensor row) repeated `batch` times."""
    if runner.manifest.tokenizer is None:
        golden = runner.manifest.golden
        if golden is None:
            raise InputError(f"bundle '{runner.bundle.path}' has no golden inputs to benchmark with; re-export it.")
        with np.load(runner.bundle.file(golden.inputs), allow_pickle=False) as data:
            return {k: np.ascontiguousarray(np.repeat(data[k][:1], batch, axis=0)) for k in data.files}
    static = runner.manifest.tokenizer.static_length
    length = int(static or seq)
    feeds = runner.tokenize([BENCH_TEXT] * batch)
    out = {}
    for name, array in feeds.items():
        if array.shape[1] < length:
            raise InputError(f"the bench text tokenizes to {array.shape[1]} tokens; seq {length} is longer than the "
                             f"bundle's max_length {runner.manifest.tokenizer.max_length}.")
        out[name] = np.ascontiguousarray(array[:, :length])
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples)
    pct = {f"p{p}": float(np.percentile(arr, p)) for p in (50, 90, 95, 99)}
    return {k: round(v, 3) for k, v in {"min": float(arr.min()), **pct, "max": float(arr.max()),
                                         "mean": float(arr.mean())}.items()}


class _Timed:
    """One bundle under test: loaded, with its feeds and its latency samples."""

    def __init__(self, path: str, config: BenchConfig, idle: int):
        start = time.perf_counter()
        self.runner = load(path, threads=config.threads)
        self.load_s = time.perf_counter() - start
        self.rss_after_load = rss_bytes()
        self.idle = idle
        self.path = path
        self.feeds = feeds_for(self.runner, config.batch, config.seq)
        start = time.perf_counter()
        self.runner.run(self.feeds)
        self.first_ms = (time.perf_counter() - start) * 1000
        self.samples: list[float] = []

    def once(self) -> float:
        start = time.perf_counter()
        self.runner.run(self.feeds)
        return (time.perf_counter() - start) * 1000

    def result(self, config: BenchConfig) -> BenchResult:
        manifest = self.runner.manifest
        p50 = float(np.percentile(self.samples, 50))
        return BenchResult(
            bundle=self.path, backend=manifest.target.backend, precision=manifest.precision,
            config=asdict(config), load_s=round(self.load_s, 3), first_inference_ms=round(self.first_ms, 3),
            latency_ms=_stats(self.samples), throughput_seq_per_s=round(1000 * config.batch / p50, 2),
            rss_idle_mb=round(self.idle / 2**20, 1), rss_after_load_mb=round(self.rss_after_load / 2**20, 1),
            peak_rss_mb=round(peak_rss_bytes() / 2**20, 1), iterations=len(self.samples), samples_ms=self.samples)


def timer(run: Callable[[Any], Any], feeds: Any) -> Callable[[], float]:
    """A zero-argument function that runs `run(feeds)` once and returns its wall time in ms."""
    def once() -> float:
        start = time.perf_counter()
        run(feeds)
        return (time.perf_counter() - start) * 1000
    return once


def run_interleaved(timed: list[Callable[[], float]], sinks: list[list[float]], config: BenchConfig) -> None:
    """Warm up each, then alternate them until the count and the duration are both reached."""
    for fn in timed:
        for _ in range(config.warmup):
            fn()
    start = time.perf_counter()
    while len(sinks[0]) < config.iterations or time.perf_counter() - start < config.duration_s:
        for fn, sink in zip(timed, sinks):
            sink.append(fn())


def bench(paths: list[str], config: BenchConfig) -> list[BenchResult]:
    """Benchmark one bundle, or several interleaved (`--vs`)."""
    for name in ("batch", "seq", "iterations"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(config, name)}.")
    if config.warmup < 0 or config.duration_s < 0:
        raise InputError("--warmup and --duration cannot be negative.")
    idle = rss_bytes()
    subjects = [_Timed(p, config, idle) for p in paths]
    run_interleaved([s.once for s in subjects], [s.samples for s in subjects], config)
    return [s.result(config) for s in subjects]


INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_features() -> dict[str, Any]:
    """The CPU's model and the instruction sets that decide whether int8 kernels beat fp32."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and value.strip():
                    model = value.strip()
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("asimddp", "fma"))
    return {"model": model, "isa": isa, "int8_dot_product": any(f in flags for f in INT8_DOT_PRODUCT_FLAGS)}


def machine_summary() -> dict[str, Any]:
    """The machine a measurement ran on, as results files record it: CPU model, cores, Python, platform."""
    return {"cpu": cpu_features()["model"], "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def report(results: list[BenchResult]) -> dict[str, Any]:
    return {"schema": SCHEMA, "machine": {"platform": platform.platform(), "cpu": cpu_features(),
                                          "cpus": os.cpu_count()},
            "results": [r.to_dict() for r in results],
            "ratios_p50": {Path(r.bundle).name: round(r.latency_ms["p50"] / results[0].latency_ms["p50"], 3)
                           for r in results[1:]}}


def table(results: list[BenchResult]) -> str:
    head = f"{'bundle':44} {'p50 ms':>8} {'p90':>8} {'p99':>8} {'min':>8} {'seq/s':>8} {'load s':>7} {'peak MB':>8}"
    rows = [head, "-" * len(head)]
    for r in results:
        lat = r.latency_ms
        rows.append(f"{Path(r.bundle).name[:44]:44} {lat['p50']:8.2f} {lat['p90']:8.2f} {lat['p99']:8.2f} "
                    f"{lat['min']:8.2f} {r.throughput_seq_per_s:8.1f} {r.load_s:7.2f} {r.peak_rss_mb:8.1f}")
    cpu = cpu_features()
    if not cpu["int8_dot_product"] and any(r.precision == "int8" for r in results):
        rows.append(f"note: this CPU ({cpu['model']}) has no int8 dot-product instructions (VNNI/AMX/dotprod); "
                    "int8 kernels run on plain AVX2/SSE and may be no faster than fp32 here.")
    for r in results[1:]:
        rows.append(f"p50 ratio {Path(r.bundle).name} / {Path(results[0].bundle).name}: "
                    f"{r.latency_ms['p50'] / results[0].latency_ms['p50']:.3f}")
    return "\n".join(rows)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def add_arguments(parser) -> None:
    """The bench options, shared by `edgesdk bench` and scripts/bench_on_device.py."""
    parser.add_argument("bundle")
    parser.add_argument("--vs", action="append", default=[], metavar="BUNDLE",
                        help="compare with another bundle, interleaved (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128, help="sequence length in tokens (default 128)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100, help="minimum timed iterations (default 100)")
    parser.add_argument("--duration", type=float, default=0.0, help="minimum timed seconds (default 0)")
    parser.add_argument("--json", help="write results (schema edgesdk.bench/1) to this file")


def run_from_args(args) -> int:
    config = BenchConfig(args.threads, args.batch, args.seq, args.warmup, args.iterations, args.duration)
    results = bench([args.bundle, *args.vs], config)
    print(table(results))
    if args.json:
        write_json(args.json, report(results))
    return 0
