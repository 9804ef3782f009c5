import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_and_serve_import_nothing_from_the_export_side():
    """import-linter enforces the contract in pyproject.toml ([tool.importlinter])."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout, result.stdout  # runtime, serve, no cycles, stages, api


def test_loading_a_bundle_does_not_import_torch_or_onnx(tiny_bundle):
    code = ("import sys; from edgesdk.runtime import load; r = load(sys.argv[1]); r.embed(['hi']); "
            "print(sorted(m for m in ('torch', 'onnx', 'transformers', 'nncf', 'edgesdk.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
