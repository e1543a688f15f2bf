"""type: image — encoded images (PNG, JPEG, ... anything Pillow reads) -> one
normalized FP32 tensor.

Fields: input (BYTES [N]: raw image bytes as the binary protocols carry them,
or base64 text as JSON carries it, optionally as a data: URL), output, size
[height, width], layout (NCHW, the default, or NHWC), channels (3: RGB, the
default; 1: grayscale), resample (the resize filter: bilinear, the default,
bicubic, lanczos, box, hamming or nearest), shortest_edge (resize keeping the
aspect ratio until the shorter side has that many pixels, then crop the
centre to size; without it the image is resized to size), rescale (the factor
pixel values are multiplied by, 1/255 by default), mean and std (a number, or
one per channel). Each image is turned upright by its EXIF orientation,
converted to the channels, resized, multiplied by rescale, then normalized as
(x - mean) / std: ImageNet models take mean [0.485, 0.456, 0.406] and std
[0.229, 0.224, 0.225]. These are the steps, in the order and with the
rounding, of transformers' image processors (ViT's and ConvNeXt's).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from kbuild.runtime.contract.errors import ConfigError, DataError, RowError
from kbuild.runtime.steps import Runner, StepContext, get_choice, get_str, variable
from kbuild.runtime.tensors import Array, Vars

LAYOUTS = ("NCHW", "NHWC")
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    target = get_str(step, "output")
    height, width = _size(step.get("size"))
    layout = get_choice(step, "layout", LAYOUTS, "NCHW")
    channels = step.get("channels", 3)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError("channels must be 1 (grayscale) or 3 (RGB)")
    mode = "RGB" if channels == 3 else "L"
    resample = FILTERS[get_choice(step, "resample", list(FILTERS), "bilinear")]
    shortest = step.get("shortest_edge")
    if shortest is not None and (isinstance(shortest, bool) or not isinstance(shortest, int) or shortest < 1):
        raise ConfigError("shortest_edge must be an integer >= 1")
    if shortest is not None and shortest < max(height, width):
        raise ConfigError(f"shortest_edge {shortest} is less than the size it is cropped to ({height}x{width})")
    scale = step.get("rescale", 1 / 255)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError("rescale must be a number > 0")
    mean = _per_channel(step, "mean", 0.0, channels)
    std = _per_channel(step, "std", 1.0, channels)
    if (std == 0).any():
        raise ConfigError("std must not contain 0")

    def one(index: int, item: object) -> Array:
        try:
            with Image.open(io.BytesIO(encoded_image(index, item))) as opened:
                upright = ImageOps.exif_transpose(opened).convert(mode)
                pixels = _resized(upright, height, width, shortest, resample)
        except RowError:
            raise
        except Exception as e:  # not an image, truncated, a decompression bomb, ...
            raise RowError(f"image {index}: cannot decode: {e}") from None
        array = (np.asarray(pixels, dtype=np.float64) * scale).astype(np.float32)
        return array.reshape(height, width, channels)

    def run(variables: Vars) -> Vars:
        items = variable(variables, source)
        if items.dtype.kind not in "OS" or (items.ndim == 2 and items.shape[1] != 1) or items.ndim > 2:
            raise DataError(f"expected encoded images, BYTES [N], got {items.dtype} of shape {list(items.shape)}")
        flat = items.reshape(-1)
        if flat.size:
            batch = (np.stack([one(i, item) for i, item in enumerate(flat)]) - mean) / std
        else:
            batch = np.zeros((0, height, width, channels), dtype=np.float32)
        if layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return {target: np.ascontiguousarray(batch, dtype=np.float32)}

    return run


def _resized(image: Image.Image, height: int, width: int, shortest: int | None, resample: Image.Resampling) -> Any:
    if shortest is None:
        return image.resize((width, height), resample)
    # the shorter side to `shortest`, the longer in proportion (rounded down), then the centre
    w, h = image.size
    new_w, new_h = (shortest, int(shortest * h / w)) if w <= h else (int(shortest * w / h), shortest)
    resized = image.resize((new_w, new_h), resample)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized.crop((left, top, left + width, top + height))


def _size(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ConfigError("size must be [height, width], two integers >= 1")
    return value[0], value[1]


def _per_channel(step: Mapping[str, Any], key: str, default: float, channels: int) -> Array:
    value = step.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{key} must be a number or a list of numbers, one per channel")
    if len(values) not in (1, channels):
        raise ConfigError(f"{key} has {len(values)} values; the image has {channels} channel(s)")
    return np.asarray(values, dtype=np.float32)


def encoded_image(index: int, item: object) -> bytes:
    """An image's bytes, as a request carries them: bytes, base64 text (standard or
    URL-safe alphabet) or a base64 data: URL; RowError naming the image otherwise."""
    if isinstance(item, bytes):
        return item
    if not isinstance(item, str):
        raise RowError(f"image {index}: expected bytes or base64 text, got {type(item).__name__}")
    text = item.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise RowError(f"image {index}: a data: URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # the URL-safe alphabet, as some clients send it
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, ValueError):
        raise RowError(f"image {index}: not base64 (send the image's bytes base64-encoded)") from None
