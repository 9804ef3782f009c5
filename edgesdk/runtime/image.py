"""Image preprocessing on the device: file paths, PIL images or uint8 arrays → the model's float input tensor.

The manifest's `preprocessing` section (ImageInfo) fully describes it, the way torchvision's and Hugging Face's
image processors do: optional resize of the shorter side then a centre crop (or a plain resize) to `size` (H, W),
`rescale_factor` (1/255 by default), per-channel `mean` and `std`, channel order (rgb | bgr) and layout
(NCHW | NHWC). Colour is matched to the model: a grayscale image fed to an RGB model is replicated to three
channels (PIL's "L" → "RGB"), an RGB image fed to a one-channel model is converted to luminance, an alpha channel
is dropped. Needs numpy and Pillow only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .manifest import ImageInfo

MAX_PIXELS = 1 << 26  # 64 Mpixel: anything larger is refused before decoding (decompression bombs)


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a runtime requirement of image bundles
        raise InputError("image bundles need Pillow on the device: pip install pillow") from exc
    return Image


def check_images(images: Any) -> list[Any]:
    """One image or a list of them (paths, PIL images, H×W[×C] uint8 arrays) as a non-empty list."""
    Image = _pil()
    if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise InputError(f"images must be a path, a PIL image, an H×W×3 uint8 array or a list of them, got "
                         f"{type(images).__name__}.")
    if len(images) == 0:
        raise InputError("images is empty: pass at least one image, e.g. classify(['cat.jpg']).")
    return list(images)


def open_image(item: Any, index: int = 0):
    """A PIL image from a path, a PIL image or a uint8 array; InputError naming the item otherwise."""
    Image = _pil()
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise InputError(f"images[{index}] is an array of shape {item.shape} and dtype {item.dtype}; pass H×W×3 "
                             "(or H×W grayscale) uint8 pixels, as PIL's np.asarray(image) gives.")
        if item.size == 0:
            raise InputError(f"images[{index}] is an empty array (shape {item.shape}).")
        return Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"images[{index}]: '{path}' is not a file; pass the path of an image Pillow can read "
                             "(PNG, JPEG, BMP, WebP, ...).")
        try:
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InputError(f"images[{index}]: '{path}' is {image.width}×{image.height} pixels, more than "
                                     f"{MAX_PIXELS} (a decompression bomb?); downscale it first.")
                image.load()
                return image.copy()
        except InputError:
            raise
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... on bad files
            raise InputError(f"images[{index}]: '{path}' is not an image Pillow can read ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); pass a PNG/JPEG/BMP/WebP file.") from None
    raise InputError(f"images[{index}] is a {type(item).__name__}; pass a path, a PIL image or an H×W×3 uint8 array.")


class ImagePreprocessor:
    """Turns images into the model's input feed, per the manifest's preprocessing settings."""

    def __init__(self, info: "ImageInfo"):
        self.info = info
        self._resample = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}[info.resample]

    def pixels(self, item: Any, index: int = 0) -> np.ndarray:
        """One image as float32 [C, H, W] (or [H, W, C] for NHWC), ready to stack into a batch."""
        info = self.info
        image = open_image(item, index)
        image = image.convert("L" if info.channels == 1 else "RGB")
        height, width = info.size
        if info.resize_shorter:
            scale = info.resize_shorter / min(image.width, image.height)
            size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
            image = image.resize(size, self._resample)
            left, top = (image.width - width) // 2, (image.height - height) // 2
            image = image.crop((left, top, left + width, top + height))
        elif (image.height, image.width) != (height, width):
            image = image.resize((width, height), self._resample)
        array = np.asarray(image, dtype=np.float32)
        array = array[:, :, None] if array.ndim == 2 else array
        if info.channel_order == "bgr":
            array = array[:, :, ::-1]
        array = (array * info.rescale_factor - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1) if info.layout == "NCHW" else array, dtype=np.float32)

    def __call__(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        return {self.info.input: np.stack([self.pixels(item, i) for i, item in enumerate(images)])}
