"""edgesdk serve: the HTTP API on the tiny bundles, with the real runtime behind it.

In-process tests use Starlette's TestClient; batching across concurrent clients, SIGTERM draining and Ray Serve
run the real CLI in a subprocess on 127.0.0.1 (every request loop bounded in count and time).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime import load

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from starlette.testclient import TestClient  # noqa: E402

from edgesdk.serve import ServeOptions, build_app  # noqa: E402
from edgesdk.serve.app import TokenCounter, padding_changes_results, rows_function  # noqa: E402
from edgesdk.serve.batching import Batcher, BatchOptions  # noqa: E402
from edgesdk.serve.info import bundle_info  # noqa: E402
from edgesdk.serve.metrics import Metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["hello world", "edge devices are small", "a much longer sentence about memory budgets on boards", "ok"]


@pytest.fixture(scope="module")
def runner(tiny_bundle):
    with load(tiny_bundle, threads=1) as r:
        yield r


@pytest.fixture(scope="module")
def client(tiny_bundle):
    app = build_app(tiny_bundle, ServeOptions(threads=1, max_inputs=8, max_body_bytes=4096, max_wait_ms=2))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory, minilm_dir) -> Path:
    """A random-weight 2-layer BERT with a 2-class head, exported FP32 for onnxruntime (no training needed)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from conftest import TOKENIZER_FILES
    from edgesdk.api import ExportOptions, export

    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("tiny-classifier")
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).eval().save_pretrained(work / "model")
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_dir / name, work / "model" / name)
    result = export(ExportOptions(targets=("onnxruntime",), precisions=("fp32",), model=str(work / "model"),
                                  out=str(work / "dist"), fidelity_samples=16, progress=False))
    return Path(result.bundles[0].path)


def embed(client, inputs, **fields):
    return client.post("/embed", json={"inputs": inputs, **fields})


# -- TEI-style /embed ----------------------------------------------------------------------------------------
def test_embed_returns_the_runners_vectors_bit_for_bit(client, runner):
    reply = embed(client, TEXTS)
    assert reply.status_code == 200
    served = np.asarray(reply.json(), dtype=np.float32)
    assert np.array_equal(served, runner.embed(TEXTS))  # JSON floats round-trip float32 exactly
    one = np.asarray(embed(client, "hello world").json(), dtype=np.float32)
    assert one.shape == (1, 64) and np.array_equal(one[0], runner.embed(["hello world"])[0])


def test_embed_dimensions_truncate_and_renormalise(client, runner):
    served = np.asarray(embed(client, TEXTS, dimensions=16).json(), dtype=np.float32)
    assert served.shape == (4, 16)
    np.testing.assert_allclose(served, runner.encode(TEXTS, truncate_dim=16, normalize_embeddings=True), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)


def test_long_texts_are_refused_unless_truncate_is_set(client, runner):
    long_text = "word " * 300  # the tiny bundle's max length is 128 tokens
    refused = embed(client, ["fine", long_text])
    assert refused.status_code == 413
    assert "inputs[1] has 302 tokens" in refused.json()["error"] and "truncate" in refused.json()["error"]
    cut = embed(client, ["fine", long_text], truncate=True)
    assert cut.status_code == 200
    assert np.array_equal(np.asarray(cut.json(), dtype=np.float32), runner.embed(["fine", long_text]))


# -- OpenAI-style /v1/embeddings -----------------------------------------------------------------------------
def test_openai_embeddings_schema_usage_and_base64(client, runner):
    info = client.get("/info").json()
    reply = client.post("/v1/embeddings", json={"input": TEXTS, "model": info["model"]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list" and body["model"] == info["model"]
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3] and {d["object"] for d in body["data"]} == {"embedding"}
    vectors = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.array_equal(vectors, runner.embed(TEXTS))
    tokens = int(runner.tokenize(TEXTS)["attention_mask"].sum())
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    packed = client.post("/v1/embeddings", json={"input": "hello world", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, runner.embed(["hello world"])[0])

    short = client.post("/v1/embeddings", json={"input": ["hello world"], "dimensions": 8}).json()
    assert len(short["data"][0]["embedding"]) == 8
    np.testing.assert_allclose(np.linalg.norm(short["data"][0]["embedding"]), 1.0, rtol=1e-5)


# -- bad requests ------------------------------------------------------------------------------------------
BAD_REQUESTS = [
    ("/embed", {"inputs": []}, 422, "inputs is empty"),
    ("/embed", {}, 422, "missing field(s) ['inputs']"),
    ("/embed", {"inputs": ["ok", 3]}, 422, "inputs[1] is of type int"),
    ("/embed", {"inputs": [""]}, 422, "inputs[0] is an empty string"),
    ("/embed", {"inputs": ["a"] * 9}, 413, "at most 8 per request"),
    ("/embed", {"inputs": ["a"], "pooling": "cls"}, 422, "unknown field(s) ['pooling']"),
    ("/embed", {"inputs": ["a"], "normalize": "yes"}, 422, "normalize must be true or false"),
    ("/embed", {"inputs": ["a"], "dimensions": 65}, 422, "dimensions must be an integer from 1 to 64"),
    ("/embed", ["a"], 422, "must be a JSON object"),
    ("/v1/embeddings", {"input": ["a"], "encoding_format": "int8"}, 400, "encoding_format must be"),
    ("/v1/embeddings", {"input": [[101, 102]]}, 400, "input[0] is of type list"),
    ("/v1/embeddings", {"input": "a", "model": "text-embedding-3-small"}, 404, "is not served here"),
    ("/v1/embeddings", {"input": "a", "temperature": 1}, 400, "unknown field(s) ['temperature']"),
    ("/predict", {"inputs": ["a"]}, 400, "task is 'embedding'"),
]


@pytest.mark.parametrize("path,body,status,message", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(client, runner, path, body,
                                                                                 status, message):
    reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    text = error["message"] if path.startswith("/v1/") else error
    assert message in text
    assert client.get("/health").json() == {"status": "ok"}
    assert np.array_equal(np.asarray(embed(client, ["ok"]).json(), dtype=np.float32), runner.embed(["ok"]))


def test_bodies_over_the_limit_and_broken_json_are_refused(client):
    big = client.post("/embed", content=json.dumps({"inputs": ["x" * 5000]}),
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than this server's limit of 4096 bytes" in big.json()["error"]
    broken = client.post("/embed", content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    assert client.get("/nowhere").status_code == 404
    assert client.get("/embed").status_code == 405


# -- /info, /health, /metrics ---------------------------------------------------------------------------------
def test_info_health_and_metrics(client, tiny_bundle):
    info = client.get("/info").json()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert info["model"] == m["model"]["name"] and info["target"] == m["target"]["name"]
    assert info["precision"] == "fp32" and info["dimensions"] == 64 and info["max_length"] == 128
    assert info["bundle_sha256"] == m["manifest_sha256"] and info["batching"] in ("padded", "by-length")
    assert "path" not in info and "tokenizer_path" not in info  # no file system paths over HTTP
    assert client.get("/health").json() == {"status": "ok"}
    embed(client, ["metrics please"])
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("edgesdk_requests_total", "edgesdk_request_errors_total", "edgesdk_batch_size_bucket",
                 "edgesdk_request_latency_seconds_bucket", "edgesdk_queue_depth", "edgesdk_batch_latency_seconds"):
        assert name in text
    assert 'edgesdk_requests_total{endpoint="/embed",status="200"}' in text


# -- classifiers -------------------------------------------------------------------------------------------
def test_predict_serves_labels_and_scores_of_a_classifier(classifier_bundle):
    with load(classifier_bundle, threads=1) as r:
        expected = r.classify(TEXTS)
    with TestClient(build_app(classifier_bundle, ServeOptions(threads=1))) as c:
        ranked = c.post("/predict", json={"inputs": TEXTS}).json()
        single = c.post("/predict", json={"inputs": "hello world"}).json()
        refused = c.post("/embed", json={"inputs": ["a"]})
        info = c.get("/info").json()
    assert info["task"] == "classification" and info["labels"] == ["negative", "positive"]
    for row, probs, label in zip(ranked, expected.probabilities, expected.labels):
        assert row[0]["label"] == label and row[0]["score"] >= row[1]["score"]
        assert {d["label"]: d["score"] for d in row} == pytest.approx(dict(zip(expected.label_names, probs.tolist())),
                                                                     abs=0)
    assert single == ranked[0]
    assert refused.status_code == 400 and "use /predict" in refused.json()["error"]


# -- batching ----------------------------------------------------------------------------------------------
def test_padding_does_not_change_vectors_on_onnxruntime_and_by_length_batching_agrees(runner):
    """The check the server makes at start-up, plus the equal-length mode it would fall back to."""
    info = bundle_info(runner)
    counter = TokenCounter(info["tokenizer_path"], info["max_length"])
    assert not padding_changes_results(rows_function(runner, info, counter, "plain", 32))
    texts = TEXTS * 3
    alone = np.stack([runner.embed([t])[0] for t in texts])
    for mode in ("padded", "by-length"):
        for runner_batch in (2, 32):  # sorted by length, in calls of runner_batch texts
            assert np.array_equal(rows_function(runner, info, counter, mode, runner_batch)(texts), alone)


def test_batcher_groups_concurrent_requests_without_splitting_them(runner):
    metrics = Metrics()
    sizes = []

    def run(texts):
        sizes.append(len(texts))
        return runner.embed(texts)

    requests = [TEXTS[: 1 + i % 4] for i in range(12)]

    async def main():
        batcher = Batcher(run, BatchOptions(max_batch=8, max_wait_ms=50), metrics)
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return results

    results = asyncio.run(main())
    for request, rows in zip(requests, results):
        assert np.array_equal(rows, runner.embed(request))
    assert sum(sizes) == sum(len(r) for r in requests) and max(sizes) <= 8
    assert len(sizes) < len(requests)  # requests shared runner calls
    boundaries = np.cumsum([0] + [len(r) for r in requests])
    assert set(np.cumsum([0] + sizes)) <= set(boundaries)  # batches end on request boundaries
    assert metrics.batch_size._sum.get() == sum(sizes)


# -- the real server: concurrency, SIGTERM ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float = 30) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(port: int, path: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
        return reply.read().decode()


def start_server(bundle: Path, port: int, *extra: str, env: dict | None = None,
                 wait_s: float = 60) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "edgesdk.cli", "serve", str(bundle), "--port", str(port),
                                "--threads", "1", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            if json.loads(get(port, "/health", timeout=1)).get("status") == "ok":
                return process
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"server not healthy after {wait_s} s: {process.stdout.read()[-3000:]}")


def test_concurrent_clients_get_batched_identical_vectors_and_sigterm_drains(tiny_bundle, runner):
    port = free_port()
    server = start_server(tiny_bundle, port, "--max-batch", "16", "--max-wait-ms", "20")
    try:
        rng = np.random.default_rng(0)
        jobs = [[TEXTS[j] for j in rng.integers(0, len(TEXTS), size=rng.integers(1, 5))] for _ in range(48)]
        results: dict[int, tuple[int, object]] = {}

        def client(ids):
            for i in ids:
                results[i] = post(port, "/embed", {"inputs": jobs[i]})

        threads = [threading.Thread(target=client, args=(range(k, len(jobs), 8),)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == len(jobs)
        for i, (status, body) in results.items():
            assert status == 200 and np.array_equal(np.asarray(body, dtype=np.float32), runner.embed(jobs[i]))
        metrics = get(port, "/metrics")
        batches = float(next(line.split()[-1] for line in metrics.splitlines()
                             if line.startswith("edgesdk_batch_size_count")))
        assert batches < len(jobs)  # concurrent requests shared runner calls

        # SIGTERM with requests in flight: they are answered, then the server exits 0
        in_flight: list[tuple[int, object]] = []
        senders = [threading.Thread(target=lambda: in_flight.append(post(port, "/embed", {"inputs": TEXTS})))
                   for _ in range(6)]
        for t in senders:
            t.start()
        time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        for t in senders:
            t.join(timeout=30)
        assert server.wait(timeout=30) == 0
        assert all(status == 200 for status, _ in in_flight)  # answered, or never accepted
    finally:
        if server.poll() is None:
            server.kill()


def test_cli_refuses_a_missing_bundle_with_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgesdk.cli", "serve", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: bundle") and "is not a folder" in done.stderr


# -- Ray Serve ---------------------------------------------------------------------------------------------
def test_build_app_takes_serve_run_arguments(tiny_bundle):
    """What `serve run edgesdk.serve.ray:build_app bundle=... replicas=2 max_batch=16` does, minus the cluster."""
    pytest.importorskip("ray")
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from edgesdk.errors import InputError
    from edgesdk.serve.ray import build_app as build_ray_app

    app = call_user_app_builder_with_args_if_necessary(
        build_ray_app, {"bundle": str(tiny_bundle), "replicas": "2", "max_batch": "16", "auto_truncate": "true"})
    deployment = app._bound_deployment
    assert deployment.num_replicas == 2
    assert deployment.init_args[1]["max_batch"] == 16 and deployment.init_args[1]["auto_truncate"] is True
    with pytest.raises(InputError, match="unknown build_app argument 'max_batches'"):
        build_ray_app({"bundle": str(tiny_bundle), "max_batches": "16"})
    with pytest.raises(InputError, match="is not a folder here"):
        build_ray_app("/nonexistent/bundle")


@pytest.mark.ray
def test_ray_serve_answers_like_the_local_server_and_leaves_no_processes(tiny_bundle, runner):
    pytest.importorskip("ray")
    port = free_port()
    ray_tmp = Path(f"/tmp/edgesdk-ray-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    server = start_server(tiny_bundle, port, "--ray", "--replicas", "1", "--num-cpus", "2", env=env, wait_s=120)
    try:
        status, body = post(port, "/embed", {"inputs": TEXTS})
        assert status == 200 and np.array_equal(np.asarray(body, dtype=np.float32), runner.embed(TEXTS))
        status, body = post(port, "/v1/embeddings", {"input": ["hello world"]})
        assert status == 200 and np.array_equal(np.asarray(body["data"][0]["embedding"], dtype=np.float32),
                                                runner.embed(["hello world"])[0])
        status, body = post(port, "/embed", {"inputs": []})
        assert status == 422 and "inputs is empty" in body["error"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ray_processes(ray_tmp):
            time.sleep(0.5)
        assert ray_processes(ray_tmp) == []
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def ray_processes(ray_tmp: Path) -> list[str]:
    """Processes whose command line names this test's Ray temp folder (raylet, GCS, workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(ray_tmp) in cmdline:
                found.append(cmdline[:200])
    return found
