"""The image step in-process: bytes or base64 in, the tensor Pillow and NumPy
make of them out, in either layout, with its errors."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kbuild.runtime.contract.errors import ConfigError, DataError, RowError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.steps.image import build


def encoded(pixels: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **save)
    return out.getvalue()


def step(tmp_path: Path, **fields: Any) -> Any:
    return build({"name": "img", "type": "image", "input": "x", "output": "y", **fields}, StepContext("img", tmp_path))


def reference(data: bytes, size: tuple[int, int], mode: str) -> np.ndarray:
    """HWC floats in [0, 1], as the step documents it."""
    with Image.open(io.BytesIO(data)) as image:
        resized = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return array.reshape(size[0], size[1], -1)


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encoded(rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)) for _ in range(3)]


def test_bytes_and_base64_give_the_same_normalized_nchw_tensor(tmp_path: Path, photos: list[bytes]) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    run = step(tmp_path, size=[6, 10], mean=mean, std=std)
    raw = run({"x": np.array(photos, dtype=object)})["y"]
    assert raw.shape == (3, 3, 6, 10) and raw.dtype == np.float32 and raw.flags.c_contiguous
    expected = np.stack([(reference(p, (6, 10), "RGB") - mean) / std for p in photos]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-6)
    texts = [
        base64.b64encode(photos[0]).decode(),
        "data:image/png;base64," + base64.b64encode(photos[1]).decode(),
        base64.urlsafe_b64encode(photos[2]).decode(),
    ]
    np.testing.assert_array_equal(run({"x": np.array(texts, dtype=object)})["y"], raw)
    np.testing.assert_array_equal(run({"x": np.array([[t] for t in texts], dtype=object)})["y"], raw)  # [N, 1]


def test_nhwc_grayscale_jpeg(tmp_path: Path, photos: list[bytes]) -> None:
    jpeg = encoded(np.asarray(Image.open(io.BytesIO(photos[0]))), "JPEG", quality=90)
    out = step(tmp_path, size=[4, 4], layout="NHWC", channels=1, mean=0.5, std=0.5)(
        {"x": np.array([jpeg], dtype=object)}
    )["y"]
    assert out.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out[0], (reference(jpeg, (4, 4), "L") - 0.5) / 0.5, rtol=1e-6, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((2, 4), dtype=np.uint8)
    pixels[0, 0] = 255  # the top-left pixel of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    data = encoded(pixels, exif=exif)
    out = step(tmp_path, size=[4, 2], channels=1)({"x": np.array([data], dtype=object)})["y"]
    upright = out[0, 0]
    assert upright.shape == (4, 2) and upright[0, 1] == 1.0 and upright.sum() == 1.0  # now at the top right


def test_an_empty_batch_has_the_declared_shape(tmp_path: Path) -> None:
    out = step(tmp_path, size=[5, 7])({"x": np.array([], dtype=object)})["y"]
    assert out.shape == (0, 3, 5, 7) and out.dtype == np.float32


@pytest.mark.parametrize(
    "value, message",
    [
        (["not base64 at all!"], "image 0: "),
        ([base64.b64encode(b"plain text, not an image").decode()], "image 0: cannot decode"),
        (["data:image/png,notbase64"], "data: URL must be base64"),
        ([12], "expected bytes or base64 text, got int"),
    ],
    ids=["not-base64", "not-an-image", "data-url-without-base64", "a-number"],
)
def test_bad_images_are_the_clients_fault(tmp_path: Path, value: list[Any], message: str) -> None:
    with pytest.raises(RowError, match=message) as refused:
        step(tmp_path, size=[2, 2])({"x": np.array(value, dtype=object)})
    assert refused.value.http_status == 400


def test_numbers_are_not_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected encoded images"):
        step(tmp_path, size=[2, 2])({"x": np.zeros((1, 4), dtype=np.float32)})


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"size": [0, 4]}, "size must be"),
        ({"size": [4]}, "size must be"),
        ({"size": [4, 4], "channels": 2}, "channels must be 1"),
        ({"size": [4, 4], "layout": "CHW"}, "expected one of NCHW, NHWC"),
        ({"size": [4, 4], "mean": [0.1, 0.2]}, "mean has 2 values; the image has 3"),
        ({"size": [4, 4], "std": [1.0, 0.0, 1.0]}, "std must not contain 0"),
    ],
)
def test_bad_fields_fail_at_load(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        step(tmp_path, **fields)
