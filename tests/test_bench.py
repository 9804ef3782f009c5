import json
import subprocess
import sys
from pathlib import Path

from edgesdk.runtime.bench import SCHEMA, BenchConfig, bench, report

ROOT = Path(__file__).resolve().parents[1]


def test_bench_schema_and_interleaving(tiny_export):
    paths = [b.path for b in tiny_export.bundles if b.backend == "onnxruntime"]
    results = bench(paths, BenchConfig(threads=1, seq=32, warmup=2, iterations=5))
    data = report(results)
    assert data["schema"] == SCHEMA and len(data["results"]) == 2
    for r in data["results"]:
        assert set(r["latency_ms"]) >= {"min", "p50", "p90", "p95", "p99", "max"}
        assert r["iterations"] == 5 and r["config"]["seq"] == 32
        assert r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["max"]
        assert r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0
    assert len(data["ratios_p50"]) == 1


def test_standalone_script_writes_json(tiny_bundle, tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_on_device.py"), str(tiny_bundle), "--seq", "16",
                    "--iterations", "3", "--warmup", "1", "--json", str(out)], check=True, capture_output=True)
    data = json.loads(out.read_text())
    assert data["results"][0]["config"]["seq"] == 16


def test_bad_bench_settings_are_input_errors(tiny_bundle):
    import pytest

    from edgesdk.errors import InputError

    with pytest.raises(InputError, match="--seq must be at least 1"):
        bench([str(tiny_bundle)], BenchConfig(seq=0))
    with pytest.raises(InputError, match="longer than the bundle's max_length"):
        bench([str(tiny_bundle)], BenchConfig(seq=4096, iterations=1, warmup=0))
