"""Measured memory of a bundle at one (batch, seq), in a fresh subprocess so the peak RSS is that run's alone.

The child imports numpy and the bundle's runtime library (for OpenVINO it also loads the device plugin, which is
code, not model) and builds the feeds; that RSS is *idle*. It then opens the bundle's session — the same code the
on-device Runner uses — and runs it `runs` times. The peak RSS is the high-water mark of the whole
process image (read as VmHWM, which
unlike ru_maxrss is not inherited across fork+exec), so `peak - idle` is the most memory this model ever added: its weights as the runtime holds them, the
transient copies made while loading, and the activations. Token ids are random ids of exactly `seq` tokens, fed to
the session directly (as Runner.run does), so any length the model's position table allows can be measured.
Threads are pinned to the number asked (default 1) so measurements do not fight over a shared CPU.
`python -m edgesdk.plan.measure BUNDLE BATCH SEQ RUNS THREADS` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EdgeSDKError
from ..runtime.bench import peak_rss_bytes, rss_bytes

MEASURE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Measurement:
    bundle: str
    backend: str
    precision: str
    batch: int
    seq: int
    runs: int
    threads: int
    rss_idle: int
    rss_after_load: int
    peak_after_load: int
    peak: int
    runtime_reported: dict | None

    @property
    def increase(self) -> int:
        """Peak RSS over the whole run minus the idle RSS: what the model cost this process."""
        return self.peak - self.rss_idle

    @property
    def load_increase(self) -> int:
        return self.peak_after_load - self.rss_idle

    def to_dict(self) -> dict:
        return dict(asdict(self), increase=self.increase, load_increase=self.load_increase)


def measure(bundle: str | Path, batch: int, seq: int, runs: int = 3, threads: int = 1) -> Measurement:
    """Run the bundle in a fresh Python process and return its memory; raises EdgeSDKError if the child fails."""
    cmd = [sys.executable, "-m", "edgesdk.plan.measure", str(bundle), str(batch), str(seq), str(runs), str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        raise EdgeSDKError(f"measuring {bundle} at batch {batch}, seq {seq} took over {MEASURE_TIMEOUT_S}s; "
                           "use a smaller --batch/--seq or fewer --runs.") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise EdgeSDKError(f"the measurement run of {bundle} at batch {batch}, seq {seq} failed "
                           f"(exit {done.returncode}): {' | '.join(tail)}. Check the bundle with `edgesdk verify`.")
    data = json.loads(lines[-1])
    return Measurement(**data)


def _feeds(manifest: dict, batch: int, seq: int):
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in manifest.inputs:
        if spec.name == "input_ids":
            array = rng.integers(1000, 20000, size=(batch, seq))
        elif spec.name == "attention_mask":
            array = np.ones((batch, seq))
        else:
            array = np.zeros((batch, seq))
        feeds[spec.name] = np.ascontiguousarray(array.astype(spec.dtype))
    return feeds


def _child(bundle_path: str, batch: int, seq: int, runs: int, threads: int) -> dict:
    from ..runtime.manifest import read_bundle
    from ..runtime.registry import runtime_backend

    bundle = read_bundle(bundle_path, verify_hashes=False)
    backend = bundle.backend
    feeds = _feeds(bundle.manifest, batch, seq)
    runtime = runtime_backend(backend)
    runtime.warm_up(bundle.settings)  # import the runtime and its device plugin (code shared by any model)
    idle = rss_bytes()
    session = runtime.open_session(bundle, threads)
    after_load, peak_load = rss_bytes(), peak_rss_bytes()
    for _ in range(runs):
        session.infer(feeds)
    report = getattr(session, "memory_report", None)  # what the runtime itself says about memory, if anything
    reported = report() if callable(report) else None
    return {"bundle": str(bundle_path), "backend": backend, "precision": bundle.manifest.precision,
            "batch": batch, "seq": seq, "runs": runs, "threads": threads, "rss_idle": idle,
            "rss_after_load": after_load, "peak_after_load": peak_load, "peak": peak_rss_bytes(),
            "runtime_reported": reported}


if __name__ == "__main__":
    path, b, s, n, t = sys.argv[1:6]
    print(json.dumps(_child(path, int(b), int(s), int(n), int(t))))
