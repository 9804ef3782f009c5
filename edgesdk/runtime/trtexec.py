"""`edgesdk build-engine` without TensorRT's Python API: trtexec, with arguments built here from the manifest.

A bundle is data from elsewhere: its `build_engine.sh` is for a person to read and run by hand, and edgesdk never
executes it. The trtexec command is assembled from `manifest.json` `target.tensorrt` after checking every field
(precision flags from a fixed set, shapes as positive integers for exactly the model's inputs, names and paths
of plain characters that stay inside the bundle) and run without a shell, so a tampered manifest can at worst
make trtexec fail, never run something else.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError
from .tensorrt import engine_key

PRECISION_FLAGS = ("--int8", "--fp16", "--bf16", "--fp8", "--best")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # no ',' ':' '=' or spaces: trtexec's separators


def validated_settings(bundle) -> dict[str, Any]:
    """The TensorRT build settings of a bundle as plain values, after the checks trtexec's argument syntax needs.

    Types, ranges, flags and relative paths were checked when the manifest was read (runtime/tensorrt.py,
    TRTBuild); here: input names without trtexec's separators, and shapes for exactly the model's inputs.
    """
    where = f"bundle '{bundle.path}' manifest target.settings.tensorrt"
    build = bundle.settings.tensorrt
    names = [spec.name for spec in bundle.manifest.inputs]
    if any(not SAFE_NAME.match(n) for n in names):
        raise BundleError(f"{where}: input names {names!r} must be plain names (letters, digits, _ . -).")
    shapes = {kind: {n: list(d) for n, d in getattr(build.shapes, kind).items()} for kind in ("min", "opt", "max")}
    for kind, table in shapes.items():
        if sorted(table) != sorted(names) or not all(dims for dims in table.values()):
            raise BundleError(f"{where}.shapes.{kind} is {table!r}; it must give dims for exactly the inputs {names}.")
    for key in ("timing_cache", "engine_dir", "plan"):
        if not all(SAFE_NAME.match(p) for p in PurePosixPath(getattr(build, key)).parts):
            raise BundleError(f"{where}.{key} is {getattr(build, key)!r}; it must be plain names (no '..').")
    return {"precision_flags": list(build.precision_flags), "shapes": shapes, "workspace_mb": build.workspace_mb,
            "dla_core": build.dla_core, "gpu_fallback": build.gpu_fallback, "timing_cache": build.timing_cache,
            "engine_dir": build.engine_dir, "plan": build.plan}


def trtexec_command(trtexec: str, bundle, settings: dict[str, Any], plan: Path) -> list[str]:
    return trtexec_args(settings, str(bundle.artefact), str(plan), str(bundle.path / settings["timing_cache"]),
                        trtexec)


def trtexec_args(settings: dict[str, Any], onnx_file: str, plan: str, timing_cache: str,
                 trtexec: str = "trtexec") -> list[str]:
    """trtexec's arguments for a bundle's build settings: the one place they are spelled (build_engine.sh, the
    exporter, and `edgesdk build-engine` all use it)."""
    def shape(kind: str) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, d))}" for n, d in settings["shapes"][kind].items())

    command = [trtexec, f"--onnx={onnx_file}", f"--saveEngine={plan}",
               f"--minShapes={shape('min')}", f"--optShapes={shape('opt')}", f"--maxShapes={shape('max')}",
               f"--timingCacheFile={timing_cache}", *settings["precision_flags"]]
    if settings["workspace_mb"]:
        command.append(f"--memPoolSize=workspace:{settings['workspace_mb']}M")
    if settings["dla_core"] >= 0:
        command.append(f"--useDLACore={settings['dla_core']}")
        if settings["gpu_fallback"]:
            command.append("--allowGPUFallback")
    return command


def build_with_trtexec(bundle, trtexec: str) -> Path:
    """Build (or find cached) engines/<TensorRT version>_<GPU>/model.plan with trtexec; never the bundle's script."""
    settings = validated_settings(bundle)
    if bundle.artefact.suffix != ".onnx" or not bundle.artefact.is_file():
        raise BundleError(f"bundle '{bundle.path}': the TensorRT artefact must be an .onnx file in the bundle.")
    plan = bundle.path / settings["engine_dir"] / engine_key(_trt_version(trtexec), _gpu_name()) / settings["plan"]
    if plan.is_file():
        return plan
    plan.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(trtexec_command(trtexec, bundle, settings, plan), cwd=bundle.path, capture_output=True,
                          text=True)
    if done.returncode != 0 or not plan.is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise BundleError(f"trtexec failed to build the engine for '{bundle.path}' (exit {done.returncode}): {tail}")
    return plan


def _trt_version(trtexec: str) -> str:
    try:
        text = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    found = re.search(r"TensorRT\.trtexec \[TensorRT v(\d+)\]|TensorRT v(\d+)", text)
    return next((g for g in found.groups() if g), "unknown") if found else "unknown"


def _gpu_name() -> str:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30).stdout.strip().splitlines()
            if out:
                return out[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:  # Jetson boards have no nvidia-smi; the device tree names the module
        return Path("/proc/device-tree/model").read_text().strip("\0\n ") or "gpu"
    except OSError:
        return "gpu"
