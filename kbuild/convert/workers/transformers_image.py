"""A transformers folder with an image-classification head (ViT, ResNet,
ConvNeXt) -> ONNX (pixel values -> logits, dynamic batch axis) with torch's
exporter. Two things are proven: that the artifact's image step makes the
pixel values transformers' own image processor makes, image by image (the
samples and generated images of several shapes, modes and formats), and that
the converted model gives the model's logits on them, in batches of several
sizes. Runs in the build-side environment."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image

from kbuild.convert.workers.equivalence import CheckpointError, Feed, canonical_onnx, compare, exporter_error, session
from kbuild.runtime.contract.errors import RowError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.steps.image import build as image_step
from kbuild.runtime.steps.image import encoded_image

BATCHES = (1, 3, 8)
# (height, width, mode, format): wide, tall, square, tiny, large, grey, with alpha, a palette, JPEG
SHAPES = [
    (37, 53, "RGB", "PNG"),
    (96, 41, "RGB", "JPEG"),
    (64, 64, "L", "PNG"),
    (7, 9, "RGBA", "PNG"),
    (300, 220, "RGB", "JPEG"),
    (120, 160, "P", "PNG"),
    (33, 250, "RGB", "PNG"),
    (224, 224, "RGB", "JPEG"),
]
PIXEL_TOLERANCE = 1e-4  # the image step against the processor; they share Pillow's resize, so only float rounding


def _generated(rng: np.random.Generator) -> list[bytes]:
    made = []
    for h, w, mode, kind in SHAPES:
        # smooth gradients with noise: what resize filters treat differently shows
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], -1)
        pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(out, format=kind)
        made.append(out.getvalue())
    return made


def _pixels(step: Any, data: bytes) -> np.ndarray:
    made = step({"x": np.array([data], dtype=object)})
    assert made is not None
    return np.asarray(made["y"])


def convert(request: Mapping[str, Any], output: Path) -> dict[str, Any]:
    folder = Path(request["checkpoint"])
    fields: dict[str, Any] = dict(request["settings"]["image"])
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers says what is missing or wrong
        raise CheckpointError(f"transformers cannot load {folder.name}: {str(e).splitlines()[0]}") from None
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.inner(pixel_values=pixel_values).logits
            return logits

    wrapper = Logits().eval()
    height, width = fields["size"]
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    onnx_path = output / "model.onnx"
    try:
        torch.onnx.export(
            wrapper,
            (example,),
            str(onnx_path),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            optimize=True,
            verbose=False,
        )
    except Exception as e:  # what the exporter could not handle, in its words
        raise CheckpointError(f"torch's ONNX exporter cannot convert {folder.name}: {exporter_error(e)}") from None
    canonical_onnx(onnx_path)

    ours = image_step(
        {"name": "image", "type": "image", "input": "x", "output": "y", **fields}, StepContext("image", folder)
    )
    # the samples' images decoded as the artifact decodes them (base64, URL-safe, data: URLs)
    try:
        samples = [encoded_image(i, item) for i, item in enumerate(request.get("images") or [])]
    except RowError as e:
        raise CheckpointError(f"a sample's {e}") from None
    images = samples + _generated(np.random.default_rng(0))
    pixels = [_pixels(ours, data) for data in images]
    worst, where = 0.0, ""
    for i, (data, mine) in enumerate(zip(images, pixels, strict=True)):
        loaded = transformers.image_utils.load_image(Image.open(io.BytesIO(data)))  # upright, RGB, as pipelines load
        theirs = np.asarray(processor(loaded, return_tensors="np")["pixel_values"], dtype=np.float32)
        if theirs.shape != mine.shape:
            raise CheckpointError(f"the image processor makes {list(theirs.shape)}, the image step {list(mine.shape)}")
        diff = float(np.max(np.abs(theirs - mine)))
        if diff >= worst:
            worst, where = (
                diff,
                f"sample image {i + 1}" if i < len(samples) else f"generated image {i - len(samples) + 1}",
            )
    if worst > PIXEL_TOLERANCE:
        raise CheckpointError(
            f"the image step's pixel values differ from {type(processor).__name__}'s by up to {worst:.3g} ({where}); "
            "kbuild cannot reproduce this processor"
        )

    def framework(feed: Feed) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {"logits": wrapper(torch.from_numpy(feed["pixel_values"])).numpy()}

    feeds: list[tuple[str, Feed]] = [
        (f"sample image {i + 1}", {"pixel_values": p}) for i, p in enumerate(pixels[: len(samples)])
    ]
    generated = pixels[len(samples) :]
    start = 0
    for size in BATCHES:
        chunk = [generated[(start + k) % len(generated)] for k in range(size)]
        start += size
        feeds.append((f"{size} generated images", {"pixel_values": np.concatenate(chunk)}))
    result = compare(framework, session(onnx_path), feeds)
    result["image_processor"] = {"checked": len(images), "max_abs_diff": worst, "processor": type(processor).__name__}
    result["framework"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return result
