"""The image step does what transformers' image processors do, to the
rounding: ViT's (resize to a size, any filter) and ConvNeXt's (the shorter
side to shortest_edge / crop_pct, then the centre cropped), measured against
transformers' own Pillow processors on images of several shapes and modes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.steps.image import build

SHAPES = [(37, 53), (64, 31), (40, 40), (300, 17)]  # (height, width): wide, tall, square, extreme
MODES = ["RGB", "RGBA", "L", "P"]


def _images() -> list[bytes]:
    rng = np.random.default_rng(0)
    made = []
    for (h, w), mode in zip(SHAPES, MODES, strict=True):
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        out = io.BytesIO()
        image.save(out, format="PNG")
        made.append(out.getvalue())
    return made


def _ours(tmp_path: Path, images: list[bytes], **fields: Any) -> np.ndarray:
    run = build({"name": "img", "type": "image", "input": "x", "output": "y", **fields}, StepContext("img", tmp_path))
    made = run({"x": np.array(images, dtype=object)})
    assert made is not None
    return np.asarray(made["y"])


def _theirs(processor: Any, images: list[bytes]) -> np.ndarray:
    opened = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]  # as transformers' load_image does
    return np.stack([np.asarray(processor(image, return_tensors="np")["pixel_values"][0]) for image in opened])


@pytest.mark.parametrize("resample", [("bilinear", 2), ("bicubic", 3), ("lanczos", 1), ("nearest", 0)])
def test_a_vit_processor_is_matched(tmp_path: Path, resample: tuple[str, int]) -> None:
    name, pil = resample
    processor = ViTImageProcessorPil(
        size={"height": 24, "width": 32}, resample=pil, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    images = _images()
    ours = _ours(tmp_path, images, size=[24, 32], resample=name, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    np.testing.assert_allclose(ours, _theirs(processor, images), atol=1e-5)


@pytest.mark.parametrize("shortest_edge", [16, 32, 57])
def test_a_convnext_processor_is_matched(tmp_path: Path, shortest_edge: int) -> None:
    crop_pct = 0.875
    processor = ConvNextImageProcessorPil(
        size={"shortest_edge": shortest_edge},
        crop_pct=crop_pct,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    images = _images()
    ours = _ours(
        tmp_path,
        images,
        size=[shortest_edge, shortest_edge],
        shortest_edge=int(shortest_edge / crop_pct),
        resample="bicubic",
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    np.testing.assert_allclose(ours, _theirs(processor, images), atol=1e-5)


def test_a_rescale_factor_replaces_the_default(tmp_path: Path) -> None:
    images = _images()[:1]
    default = _ours(tmp_path, images, size=[8, 8])
    np.testing.assert_allclose(_ours(tmp_path, images, size=[8, 8], rescale=1.0), default * 255, rtol=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shortest_edge": 10}, "shortest_edge 10 is less than the size it is cropped to"),
        ({"shortest_edge": 0}, "shortest_edge must be an integer >= 1"),
        ({"rescale": 0}, "rescale must be a number > 0"),
        ({"resample": "cubic"}, "resample"),
    ],
)
def test_bad_resize_settings_are_config_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _ours(tmp_path, [], size=[12, 12], **fields)
