#!/usr/bin/env python3
"""Load test for `edgesdk serve` on loopback: concurrent clients, every vector checked against the bare runner.

    python scripts/load_test_serve.py dist/all-minilm-l6-v2-onnxruntime-fp32 --clients 16 --requests 200 \\
        --threads 2 --ray --json load.json

Runs, each as a real `edgesdk serve` subprocess on 127.0.0.1 stopped by SIGTERM (exit status checked):
  batched   --max-batch 32 --max-wait-ms 5: dynamic batching across requests
  batch-1   --max-batch 1: no batching across requests (each request is one runner call)
  ray       --ray --replicas 2 (with --ray)
plus the bare runner in this process on the same requests (one runner call per request) and on the same texts in
server-shaped batches (windows of --max-batch texts sorted by length, calls of --runner-batch). Each client sends `--requests` requests of 1..`--max-texts` texts (seeded) over one keep-alive
connection; every request has a timeout and the whole run a deadline. Reports errors, vectors that differ from
runner.embed() of the same texts, latency p50/p99 and throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> list[str]:
    texts = []
    for path in sorted((ROOT / "edgesdk" / "quant" / "texts").glob("*.txt")):
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


def make_jobs(texts: list[str], clients: int, requests: int, max_texts: int, seed: int) -> list[list[list[str]]]:
    rng = np.random.default_rng(seed)
    return [[[texts[i] for i in rng.integers(0, len(texts), size=rng.integers(1, max_texts + 1))]
             for _ in range(requests)] for _ in range(clients)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: str, port: int, args: list[str], env: dict, wait_s: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "edgesdk.cli", "serve", bundle, "--host", "127.0.0.1",
                                "--port", str(port), *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if json.loads(conn.getresponse().read()).get("status") == "ok":
                return process
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server not healthy after {wait_s} s")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


def drive(port: int, jobs: list[list[list[str]]], deadline_s: float, timeout_s: float) -> dict:
    """Every client thread sends its requests in order over one connection; returns replies and latencies."""
    replies: list[list] = [[None] * len(client) for client in jobs]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_s

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        for i, texts in enumerate(jobs[k]):
            if time.monotonic() > deadline:
                with lock:
                    errors.append(f"client {k}: deadline reached at request {i}")
                return
            body = json.dumps({"inputs": texts})
            started = time.perf_counter()
            try:
                conn.request("POST", "/embed", body=body, headers={"content-type": "application/json"})
                reply = conn.getresponse()
                data = reply.read()
            except OSError as exc:
                with lock:
                    errors.append(f"client {k} request {i}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if reply.status != 200:
                    errors.append(f"client {k} request {i}: HTTP {reply.status} {data[:200]!r}")
                else:
                    replies[k][i] = data
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(len(jobs))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + timeout_s))
    wall = time.perf_counter() - started
    return {"replies": replies, "latencies": latencies, "errors": errors, "wall_s": wall}


def check(run: dict, jobs: list[list[list[str]]], expected: list[list[np.ndarray]]) -> dict:
    differ, max_abs, texts = 0, 0.0, 0
    for k, client in enumerate(jobs):
        for i, request in enumerate(client):
            texts += len(request)
            data = run["replies"][k][i]
            if data is None:
                continue
            got = np.asarray(json.loads(data), dtype=np.float32)
            if not np.array_equal(got, expected[k][i]):
                differ += 1
                max_abs = max(max_abs, float(np.abs(got - expected[k][i]).max()))
    lat = np.asarray(run["latencies"]) * 1000
    requests = sum(len(c) for c in jobs)
    return {"requests": requests, "texts": texts, "errors": len(run["errors"]), "first_errors": run["errors"][:3],
            "vectors_differing": differ, "max_abs_diff": max_abs, "wall_s": round(run["wall_s"], 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "requests_per_s": round(requests / run["wall_s"], 1), "texts_per_s": round(texts / run["wall_s"], 1)}


def bare_runner(bundle: str, threads: int, jobs: list[list[list[str]]], max_batch: int,
                runner_batch: int) -> tuple[list[list[np.ndarray]], dict]:
    """The runner alone: one call per request (also the reference vectors), and server-shaped batches (windows of
    max_batch texts, sorted by token length, in calls of runner_batch texts)."""
    from edgesdk.runtime import load

    with load(bundle, threads=threads) as runner:
        runner.embed(["warm up"])
        started = time.perf_counter()
        expected = [[runner.embed(request) for request in client] for client in jobs]
        per_request = time.perf_counter() - started
        flat = [text for client in jobs for request in client for text in request]
        started = time.perf_counter()
        for i in range(0, len(flat), max_batch):
            window = flat[i:i + max_batch]
            lengths = runner.tokenize(window)["attention_mask"].sum(axis=1)
            runner.embed([window[j] for j in np.argsort(lengths, kind="stable")], batch_size=runner_batch)
        shaped = time.perf_counter() - started
    return expected, {"texts": len(flat), "per_request_texts_per_s": round(len(flat) / per_request, 1),
                      "server_shaped_texts_per_s": round(len(flat) / shaped, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=200, help="requests per client")
    p.add_argument("--max-texts", type=int, default=8, help="texts per request: 1..N")
    p.add_argument("--threads", type=int, default=2, help="runtime threads of the server's runner (and the bare one)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--runner-batch", type=int, default=8)
    p.add_argument("--ray", action="store_true", help="also run the load on --ray --replicas 2")
    p.add_argument("--skip-batch1", action="store_true", help="skip the batch-1 comparison run")
    p.add_argument("--deadline-s", type=float, default=900, help="per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    jobs = make_jobs(corpus(), args.clients, args.requests, args.max_texts, args.seed)
    expected, bare = bare_runner(args.bundle, args.threads, jobs, args.max_batch, args.runner_batch)
    print(f"bare runner: {bare}", flush=True)
    results = {"bundle": args.bundle, "clients": args.clients, "requests_per_client": args.requests,
               "max_texts": args.max_texts, "threads": args.threads, "bare_runner": bare, "runs": {}}
    runs = [("batched", ["--threads", str(args.threads), "--max-batch", str(args.max_batch),
                         "--max-wait-ms", str(args.max_wait_ms), "--runner-batch", str(args.runner_batch)])]
    if not args.skip_batch1:
        runs.append(("batch-1", ["--threads", str(args.threads), "--max-batch", "1", "--max-wait-ms", "0"]))
    if args.ray:
        ray_tmp = f"/tmp/edgesdk-ray-load-{os.getpid()}"
        runs.append(("ray-2-replicas", ["--ray", "--replicas", "2", "--threads", "1", "--num-cpus", "2",
                                        "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
                                        "--runner-batch", str(args.runner_batch)]))
        env["RAY_TMPDIR"], env["RAY_USAGE_STATS_ENABLED"] = ray_tmp, "0"
    for name, server_args in runs:
        port = free_port()
        server = start(args.bundle, port, server_args, env, wait_s=180 if name.startswith("ray") else 60)
        try:
            run = drive(port, jobs, args.deadline_s, timeout_s=60)
        finally:
            status = stop(server)
        summary = check(run, jobs, expected) | {"server_exit_status": status, "server_args": server_args}
        results["runs"][name] = summary
        print(f"{name}: {json.dumps(summary)}", flush=True)

    batched = results["runs"]["batched"]
    results["served_vs_bare_per_request"] = round(batched["texts_per_s"] / bare["per_request_texts_per_s"], 3)
    results["served_vs_bare_server_shaped"] = round(batched["texts_per_s"] / bare["server_shaped_texts_per_s"], 3)
    if "batch-1" in results["runs"]:
        batch1 = results["runs"]["batch-1"]["texts_per_s"]
        results["batching_gain_vs_batch1"] = round(batched["texts_per_s"] / batch1, 3)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    bad = [n for n, r in results["runs"].items() if r["errors"] or r["vectors_differing"] or r["server_exit_status"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
