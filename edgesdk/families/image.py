"""The image family: CNNs and other models fed one float image tensor (NCHW or NHWC, 1 or 3 channels).

The bundle's manifest carries the preprocessing (`preprocessing`, ImageInfo: size, resize, rescale, mean/std,
channel order, layout), so the device needs numpy + Pillow + its runtime (edgesdk.runtime.image). Defaults come
from the model where it says (torchvision weight metadata, a Hugging Face preprocessor_config.json), the user's
flags override them, and the layout is read off the model's input.

Data: --calibration DIR and --fidelity-data DIR hold any images Pillow reads (searched recursively). With only a
calibration folder, fidelity uses its images from the end of the listing; with no images at all an FP32 export is
checked on synthetic images (the report says so) and an INT8 export stops, naming --calibration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelSourceError

NAME = "image"
NNCF_MODEL_TYPE = None  # NNCF's default (CNN) quantization scheme
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SYNTHETIC = 16


def layout_of(shape: tuple[int, ...]) -> tuple[str, int, tuple[int, int]] | None:
    """(layout, channels, (H, W)) for a rank-4 image input shape, or None if it does not look like an image."""
    if len(shape) != 4:
        return None
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW", shape[1], (shape[2], shape[3])
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC", shape[3], (shape[1], shape[2])
    if shape[1] in (1, 3):
        return "NCHW", shape[1], (shape[2], shape[3])
    return None


def preprocessing(input_name: str, shape: tuple[int, ...], options, defaults: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The manifest's preprocessing section: the model's defaults, then the user's flags, checked."""
    found = layout_of(shape)
    if found is None:
        raise ModelSourceError(f"input '{input_name}' has shape {list(shape)}, not an image tensor [N, C, H, W] or "
                               "[N, H, W, C] with 1 or 3 channels; pass --task tensor to export it as a tensor model.")
    layout, channels, size = found
    info = {"input": input_name, "size": list(size), "channels": channels, "layout": layout,
            "mean": [0.0] * channels, "std": [1.0] * channels}
    info.update({k: v for k, v in (defaults or {}).items() if v is not None})
    flags = {"resize_shorter": options.resize_shorter, "resample": options.resample,
             "rescale_factor": options.rescale_factor, "channel_order": options.channel_order,
             "mean": list(options.mean) if options.mean else None, "std": list(options.std) if options.std else None}
    info.update({k: v for k, v in flags.items() if v is not None})
    if options.image_size and tuple(options.image_size) != tuple(size) and all(d > 0 for d in size):
        raise InputError(f"--image-size {list(options.image_size)} differs from the model's input {list(size)} "
                         f"({layout}); drop the flag, or re-export the model with that input size.")
    for key in ("mean", "std"):
        if len(info[key]) != channels:
            if len(info[key]) == 3 and channels == 1:  # RGB statistics for a grayscale model: their mean
                info[key] = [float(np.mean(info[key]))]
            else:
                raise InputError(f"--{key} has {len(info[key])} values; the model's input has {channels} channel(s).")
    if any(s <= 0 for s in info["std"]):
        raise InputError(f"--std {info['std']} must be positive numbers.")
    return info


def hf_defaults(folder: Path) -> dict[str, Any]:
    """Defaults from a Hugging Face preprocessor_config.json beside the model, if there is one."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(path.read_text())
    out: dict[str, Any] = {}
    if cfg.get("do_normalize", True) and cfg.get("image_mean") and cfg.get("image_std"):
        out["mean"], out["std"] = list(cfg["image_mean"]), list(cfg["image_std"])
    if cfg.get("do_rescale", True) and cfg.get("rescale_factor"):
        out["rescale_factor"] = float(cfg["rescale_factor"])
    shortest = (cfg.get("size") or {}).get("shortest_edge") if isinstance(cfg.get("size"), dict) else None
    if shortest and cfg.get("do_center_crop"):
        out["resize_shorter"] = int(shortest)
    return out


def find_images(folder: str | Path, flag: str) -> list[Path]:
    path = Path(folder)
    if path.is_file() and path.suffix.lower() in EXTENSIONS:
        return [path]
    if not path.is_dir():
        raise InputError(f"{flag} '{path}' is not a folder; pass a folder of images (PNG, JPEG, ...) for this image "
                         "model.")
    images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not images:
        raise InputError(f"{flag} '{path}' holds no image files ({', '.join(EXTENSIONS)}); pass a folder of images.")
    return images


def synthetic_images(count: int, size: tuple[int, int], channels: int) -> list[np.ndarray]:
    """Deterministic smooth colour fields with edges: enough to check a conversion, never a fidelity claim."""
    rng = np.random.default_rng(0)
    h, w = size
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), channels)).astype(np.float32)
        image = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:h, :w]
        image = np.pad(image, ((0, max(0, h - image.shape[0])), (0, max(0, w - image.shape[1])), (0, 0)), "edge")
        images.append(image.astype(np.uint8) if channels == 3 else image[:, :, 0].astype(np.uint8))
    return images


def export_inputs(source, data):
    from ..runtime import manifest as mf
    from ..runtime.image import ImagePreprocessor
    from ..runtime.schema import decode
    from . import FamilyInputs

    info = decode(mf.ImageInfo, source.preprocessing, ModelSourceError, "preprocessing", f"{source.source}: ")
    encoder = ImagePreprocessor(info)
    calibration = find_images(data.calibration, "--calibration") if data.calibration else []
    notes = []
    if data.fidelity_data:
        heldout: list[Any] = list(find_images(data.fidelity_data, "--fidelity-data")[: data.fidelity_samples])
        heldout_source = str(data.fidelity_data)
    elif calibration:
        heldout = list(reversed(calibration))[: data.fidelity_samples]
        heldout_source = f"{data.calibration} (from the end of the listing)"
        notes.append("fidelity measured on calibration images (pass --fidelity-data DIR for images of their own)")
    else:
        heldout = synthetic_images(SYNTHETIC, tuple(info.size), info.channels)
        heldout_source = "synthetic images"
        notes.append("no images given: FP32 conversion checked on synthetic images; pass --fidelity-data DIR")

    def calibration_items(samples: int) -> tuple[list, str]:
        if not calibration:
            raise InputError(f"static INT8 of the image model '{source.name}' needs calibration images: pass "
                             "--calibration DIR (a few hundred images like the ones it will see), or export fp32/fp16.")
        return list(calibration[:samples]), str(data.calibration)

    return FamilyInputs(encode=encoder, heldout=heldout, heldout_source=heldout_source, golden=heldout[:4],
                        calibration_items=calibration_items, sections={"preprocessing": dict(source.preprocessing)},
                        notes=notes)


def labelled_images(folder: str | Path):
    """--eval-data for image classifiers: one subfolder per label (torchvision's ImageFolder layout)."""
    from ..evaluate import LabelledSet

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--eval-data '{root}' is not a folder; for an image classifier pass a folder with one "
                         "subfolder of images per label (e.g. eval/cat/*.jpg, eval/dog/*.jpg).")
    paths, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS):
            paths.append(str(image))
            labels.append(sub.name)
    if not paths:
        raise InputError(f"--eval-data '{root}' has no label subfolders with images; lay it out as "
                         "eval/<label>/<image>.png.")
    return LabelledSet(tuple(paths), tuple(labels))
