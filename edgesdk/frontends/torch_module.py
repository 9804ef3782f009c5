"""Any torch.nn.Module as a model source: `file.py:factory`, `package.module:factory` or `torchvision:NAME`.

The factory (called with no arguments) returns the module; weights come from `--weights FILE` (safetensors, or a
state dict read with torch.load(weights_only=True) — never unrestricted pickle). Inputs are given with
--input-shape (e.g. 1,3,224,224; several inputs: repeat, or name=shape) and --input-dtype. The module is exported
to ONNX with torch's TorchScript exporter in eval mode (BatchNorm folded into the convolutions before it, dynamic
batch axis); the module itself stays the FP32 reference and the source litert-torch converts.
A rank-4 float input with 1 or 3 channels makes an image model (classification unless --task says otherwise);
anything else a tensor model. torchvision architectures bring their labels and preprocessing from the weights'
metadata (no download: the metadata is in torchvision's code).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelSourceError, require
from .source import Feeds, SourceModel, SourceOptions

TASKS = ("image-classification", "image-embedding", "tensor")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")


def is_module_spec(model: str) -> bool:
    """'torchvision:NAME', 'file.py:factory' or 'package.module:factory' (not a path that exists)."""
    if model.startswith("torchvision:"):
        return True
    if ":" not in model or Path(model).exists():
        return False
    target, _, factory = model.rpartition(":")
    return bool(re.fullmatch(r"[A-Za-z_]\w*", factory)) and (target.endswith(".py")
                                                            or bool(re.fullmatch(r"[A-Za-z_][\w.]*", target)))


def load_module_source(model: str, work_dir: Path, options: SourceOptions, opset: int = 17) -> SourceModel:
    torch = require("torch", "export")
    module, defaults, labels, name = _build(model, options)
    if options.weights:
        _load_weights(module, options.weights)
    module = module.eval()
    specs = _input_specs(options, defaults.pop("input_shape", None))
    examples = [example_input(torch, s) for s in specs]
    with torch.inference_mode():
        try:
            out = module(*examples)
        except Exception as exc:  # a user's module on the wrong input raises anything
            raise ModelSourceError(f"'{model}' does not run on inputs {[s['shape'] for s in specs]} "
                                   f"({type(exc).__name__}: {str(exc)[:300]}); fix --input-shape / --input-dtype."
                                   ) from None
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelSourceError(f"'{model}' returns {type(out).__name__}; edgesdk exports modules that return a "
                               "tensor (or a tuple whose first item is the output to deploy).")
    family, task, pooling, preprocessing = _family(specs, out, options, defaults)
    onnx_path = work_dir / "source_fp32.onnx"
    names = [s["name"] for s in specs]
    axes = {n: {0: "batch"} for n in names}
    axes["output"] = {0: "batch"}
    with torch.inference_mode():
        try:
            torch.onnx.export(module, tuple(examples), str(onnx_path), dynamo=False, opset_version=opset,
                              input_names=names, output_names=["output"], dynamic_axes=axes,
                              do_constant_folding=True)
        except Exception as exc:
            raise ModelSourceError(f"torch could not export '{model}' to ONNX ({type(exc).__name__}: "
                                   f"{str(exc)[:300]}).") from None

    def reference(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            result = module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names])
            return (result[0] if isinstance(result, (tuple, list)) else result).float().numpy()

    labels = _labels(options, labels, out)
    from .. import families

    counts: dict[str, int] = {}
    for sub in module.modules():
        kind = type(sub).__name__
        if kind.startswith(("BatchNorm", "Conv", "Linear", "ReLU", "Hardswish")):
            counts[kind] = counts.get(kind, 0) + 1
    return SourceModel(name=name, source=model, onnx_path=onnx_path, tokenizer_dir=work_dir, task=task,
                       pooling=pooling, normalize=False, max_length=0, input_names=names, output_name="output",
                       labels=labels, reference=reference, torch_module=module,
                       family=importlib.import_module(f"{families.__name__}.{family}"), opset=opset, inputs=specs,
                       preprocessing=preprocessing, source_ops=dict(sorted(counts.items())))


def _build(model: str, options: SourceOptions):
    """(module, defaults, labels, name) for a module spec."""
    if model.startswith("torchvision:"):
        return _torchvision(model.split(":", 1)[1], options)
    target, _, factory = model.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelSourceError(f"'{target}' does not exist; pass --model path/to/file.py:factory.")
        spec = importlib.util.spec_from_file_location(f"edgesdk_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelSourceError(f"running '{target}' failed ({type(exc).__name__}: {str(exc)[:300]}).") from None
        name = path.stem
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelSourceError(f"cannot import '{target}' ({exc}); install the package or pass "
                                   "--model path/to/file.py:factory.") from None
        name = target.rsplit(".", 1)[-1]
    make = getattr(module, factory, None)
    if not callable(make):
        raise ModelSourceError(f"'{target}' has no callable '{factory}'; it should return a torch.nn.Module.")
    try:
        built = make()
    except Exception as exc:
        raise ModelSourceError(f"'{target}:{factory}()' failed ({type(exc).__name__}: {str(exc)[:300]}).") from None
    torch = require("torch", "export")
    if not isinstance(built, torch.nn.Module):
        raise ModelSourceError(f"'{target}:{factory}()' returned {type(built).__name__}, not a torch.nn.Module.")
    return built, {}, [], _slug(f"{name}-{factory}" if factory not in ("model", "build", "create") else name)


def _torchvision(arch: str, options: SourceOptions):
    try:
        import torchvision as tv
    except ImportError:
        raise ModelSourceError("--model torchvision:NAME needs torchvision matching your torch: pip install "
                               "torchvision (for the CPU build of torch: --index-url "
                               "https://download.pytorch.org/whl/cpu).") from None
    except Exception as exc:  # a torchvision built for another torch fails while registering its C++ ops
        raise ModelSourceError(f"torchvision is installed but does not load with this torch ({type(exc).__name__}: "
                               f"{str(exc)[:160]}); install the torchvision built for torch "
                               f"{require('torch', 'export').__version__}.") from None
    try:
        module = tv.models.get_model(arch, weights=None)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.models.list_models(tv.models))[:12])
        raise ModelSourceError(f"torchvision has no model '{arch}'; classification models include {known}, ... "
                               "(torchvision.models.list_models()).") from None
    defaults: dict[str, Any] = {}
    labels: list[str] = []
    try:
        weights = tv.models.get_model_weights(arch).DEFAULT
        labels = list(weights.meta.get("categories") or [])
        transform = weights.transforms()
        crop = int(transform.crop_size[0])
        defaults = {"input_shape": (1, 3, crop, crop), "resize_shorter": int(transform.resize_size[0]),
                    "mean": list(transform.mean), "std": list(transform.std),
                    "resample": str(transform.interpolation.value)}
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        defaults = {"input_shape": (1, 3, 224, 224)}
    if not options.weights:
        import logging

        logging.getLogger("edgesdk").warning("torchvision:%s has random weights: pass --weights FILE for a trained "
                                             "model", arch)
    return module, defaults, labels, _slug(arch)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"


def _load_weights(module, path: str) -> None:
    torch = require("torch", "export")
    file = Path(path)
    if not file.is_file():
        raise ModelSourceError(f"--weights '{path}' does not exist; pass a .safetensors file or a torch state dict.")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code: that is the point
        raise ModelSourceError(f"--weights '{path}' cannot be read safely ({type(exc).__name__}: {str(exc)[:200]}). "
                               "Save the state dict with safetensors (safetensors.torch.save_file) or torch.save("
                               "model.state_dict()); edgesdk never unpickles arbitrary objects.") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelSourceError(f"--weights '{path}' holds a {type(state).__name__}, not a state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelSourceError(f"--weights '{path}' does not fit the model: missing {result.missing_keys[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]} ({len(result.missing_keys)} missing, "
                               f"{len(result.unexpected_keys)} unexpected). Pass the weights of this architecture.")


def _input_specs(options: SourceOptions, default_shape) -> list[dict]:
    shapes = list(options.input_shapes) or ([(None, tuple(default_shape))] if default_shape else [])
    if not shapes:
        raise ModelSourceError("a torch module source needs its input shape: pass --input-shape 1,3,224,224 "
                               "(several inputs: repeat the flag, or name=shape).")
    dtypes = dict(options.input_dtypes)
    specs = []
    for i, (name, shape) in enumerate(shapes):
        if not shape or any(d < 1 for d in shape):
            raise ModelSourceError(f"--input-shape {list(shape)} must be positive integers, e.g. 1,3,224,224.")
        name = name or ("input" if len(shapes) == 1 else f"input_{i}")
        dtype = dtypes.get(name, dtypes.get(None, "float32"))
        if dtype not in DTYPES:
            raise ModelSourceError(f"--input-dtype '{dtype}' is not one of {', '.join(DTYPES)}.")
        specs.append({"name": name, "dtype": dtype, "shape": [1, *shape[1:]]})
    return specs


def example_input(torch, spec: dict):
    """A seeded example tensor for an input spec (N(0, 1) floats, integer zeros): export and conversion samples."""
    dtype = getattr(torch, spec["dtype"])
    if dtype.is_floating_point:
        return torch.randn(*spec["shape"], generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.zeros(*spec["shape"], dtype=dtype)


def _family(specs: list[dict], out, options: SourceOptions, defaults: dict):
    """(family, task, pooling, preprocessing) from the inputs, the output and --task."""
    from ..families import image

    task = options.task
    if task is not None and task not in TASKS:
        raise ModelSourceError(f"--task '{task}' is not one for a torch module; choose {', '.join(TASKS)}.")
    looks_like_image = len(specs) == 1 and specs[0]["dtype"].startswith("float") \
        and image.layout_of(tuple(specs[0]["shape"])) is not None
    if task == "tensor" or (task is None and not looks_like_image):
        return "tensor", "tensor", "none", None
    if not looks_like_image:
        raise ModelSourceError(f"--task {task} needs one float image input [N, C, H, W] or [N, H, W, C] with 1 or 3 "
                               f"channels; the inputs are {[(s['name'], s['shape']) for s in specs]}.")
    classify = task != "image-embedding"
    if classify and out.ndim != 2:
        raise ModelSourceError(f"the model's output has shape {list(out.shape)}, not [batch, classes]; pass "
                               "--task image-embedding (feature vectors) or --task tensor.")
    info = image.preprocessing(specs[0]["name"], tuple(specs[0]["shape"]), options, defaults)
    return "image", "classification" if classify else "embedding", "softmax" if classify else "none", info


def _labels(options: SourceOptions, labels: list[str], out) -> list[str]:
    classes = int(out.shape[-1]) if out.ndim == 2 else 0
    if options.labels:
        path = Path(options.labels)
        if not path.is_file():
            raise ModelSourceError(f"--labels '{path}' does not exist; pass a text file with one label per line.")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if classes and len(labels) != classes:
            raise ModelSourceError(f"--labels '{path}' has {len(labels)} labels; the model has {classes} classes.")
        return labels
    return labels if classes and len(labels) == classes else []
