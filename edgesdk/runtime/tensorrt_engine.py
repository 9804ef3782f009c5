"""`edgesdk build-engine BUNDLE` on the device: build the TensorRT engine once, cache it per TensorRT version and GPU.

Uses the TensorRT Python API when it is installed (the same settings as the bundle's build_engine.sh: precision
flags, min/opt/max profiles, workspace, DLA core with GPU fallback, timing cache); otherwise runs trtexec with
arguments built from the validated manifest (`trtexec.py`). It never runs the bundle's build_engine.sh, which is
for people to run by hand. Neither present → a clear error naming what to install.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BackendNotAvailableError, BundleError
from .manifest import read_bundle
from .tensorrt import engine_key
from .trtexec import build_with_trtexec, validated_settings


def build_engine(path: str | Path) -> Path:
    bundle = read_bundle(path)
    if bundle.backend != "tensorrt":
        raise BundleError(f"'{path}' is a {bundle.backend} bundle; build-engine is for TensorRT bundles "
                          "(export with --target jetson).")
    try:
        import tensorrt  # noqa: F401
        from cuda import cudart  # noqa: F401
    except ImportError:
        if shutil.which("trtexec"):  # arguments from the validated manifest; the bundle's script is never run
            return build_with_trtexec(bundle, shutil.which("trtexec"))
        raise BackendNotAvailableError("building an engine needs TensorRT on this machine: the tensorrt Python "
                                       "package with cuda-python (pip install tensorrt cuda-python, or JetPack), or "
                                       "trtexec on PATH. TensorRT cannot build without an "
                                       "NVIDIA GPU.") from None
    validated_settings(bundle)  # the same checks the trtexec path makes
    return _build_with_python(bundle)


def _build_with_python(bundle) -> Path:
    import tensorrt as trt
    from cuda import cudart

    settings = bundle.settings.tensorrt
    _, props = cudart.cudaGetDeviceProperties(0)
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    plan = bundle.path / settings.engine_dir / engine_key(trt.__version__, name) / settings.plan
    if plan.is_file():
        return plan
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle.artefact)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT's ONNX parser refused {bundle.artefact}: {errors}")
    config = builder.create_builder_config()
    for flag in settings.precision_flags:
        config.set_flag({"--int8": trt.BuilderFlag.INT8, "--fp16": trt.BuilderFlag.FP16}[flag])
    if settings.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    for spec in bundle.manifest.inputs:
        shapes = settings.shapes
        profile.set_shape(spec.name, shapes.min[spec.name], shapes.opt[spec.name], shapes.max[spec.name])
    config.add_optimization_profile(profile)
    cache_file = bundle.path / settings.timing_cache
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError("TensorRT failed to build the engine; run with TensorRT verbose logging for the cause.")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan
