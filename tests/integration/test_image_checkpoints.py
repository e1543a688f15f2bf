"""Image classifiers compiled from transformers folders: ViT (the example's,
trained here from a fixed seed), and ResNet and ConvNeXt made by the test from
fixed seeds, each with its own image processor. Their artifacts must give
transformers' own answers, computed here in-process with the folder's
AutoImageProcessor and model on pictures of several shapes, modes and formats:
labels exact, probabilities within 1e-3."""

from __future__ import annotations

import base64
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
)
from transformers.image_utils import load_image
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

from tests.helpers.build import EXAMPLES, kbuild, predict
from tests.helpers.text import replace_once

pytestmark = pytest.mark.integration

LABELS = ["red", "green", "blue"]
FRAMEWORKS = {"torch", "transformers", "tensorflow", "keras", "jax"}


def _pictures() -> list[bytes]:
    rng = np.random.default_rng(3)
    made = []
    for k, ((h, w), mode, kind) in enumerate(
        [
            ((40, 60), "RGB", "PNG"),
            ((90, 33), "RGB", "JPEG"),
            ((32, 32), "L", "PNG"),
            ((21, 70), "RGBA", "PNG"),
            ((128, 96), "P", "PNG"),
            ((50, 50), "RGB", "JPEG"),
        ]
    ):
        pixels = rng.normal(70, 40, (h, w, 3))
        pixels[..., k % 3] += 110
        out = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode).save(out, format=kind)
        made.append(out.getvalue())
    return made


def _made(tmp: Path, name: str, model: Any, processor: Any) -> Path:
    folder = tmp / name
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _resnet(tmp: Path) -> Path:
    torch.manual_seed(1)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], id2label=dict(enumerate(LABELS)))
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 40}, crop_pct=0.875, resample=3)
    return _made(tmp, "resnet", ResNetForImageClassification(config), processor)


def _convnext(tmp: Path) -> Path:
    torch.manual_seed(2)
    config = ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, id2label=dict(enumerate(LABELS))
    )
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875, resample=2)
    return _made(tmp, "convnext", ConvNextForImageClassification(config), processor)


def _vit(tmp: Path) -> Path:
    shutil.copytree(EXAMPLES / "huggingface/models/colours-vit", tmp / "vit")
    return tmp / "vit"


FOLDERS: dict[str, Callable[[Path], Path]] = {"vit": _vit, "resnet": _resnet, "convnext": _convnext}


def _pipeline(tmp: Path, folder: Path, runtime: str) -> Path:
    text = (EXAMPLES / "huggingface/image.yaml").read_text()
    text = replace_once(text, "model: models/colours-vit", f"model: {folder}")
    if runtime == "native":
        text = replace_once(
            text, "    task: image-classification\n", "    task: image-classification\n    runtime: native\n"
        )
    text = text[: text.index("samples:")]  # the example's samples are its own model's answers
    path = tmp / f"{folder.name}-{runtime}.yaml"
    path.write_text(replace_once(text, "name: colours-vit", f"name: colours-{folder.name}-{runtime}"))
    return path


def _answers(folder: Path, pictures: list[bytes]) -> tuple[list[str], np.ndarray]:
    processor = AutoImageProcessor.from_pretrained(str(folder))
    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    images = [load_image(Image.open(io.BytesIO(p))) for p in pictures]
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits
    probabilities = torch.softmax(logits, dim=1).numpy()
    return [model.config.id2label[int(i)] for i in probabilities.argmax(axis=1)], probabilities


@pytest.fixture(scope="module", params=["vit-onnx", "resnet-onnx", "convnext-onnx", "vit-native"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:
    arch, runtime = str(request.param).split("-")
    tmp = tmp_path_factory.mktemp(request.param)
    folder = FOLDERS[arch](tmp)
    out = tmp / "dist"
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", out, _pipeline(tmp, folder, runtime))
    assert proc.returncode == 0, proc.stderr
    return folder, Path(proc.stdout.strip().splitlines()[-1]), json.loads((out / "build-report.json").read_text())


def test_the_artifact_gives_transformers_answers(built: tuple[Path, Path, dict[str, Any]]) -> None:
    folder, artifact, _ = built
    pictures = _pictures()
    labels, probabilities = _answers(folder, pictures)
    body = {"image": [base64.b64encode(p).decode() for p in pictures]}
    answer = predict(artifact, body)
    assert answer["colour"] == labels  # exact
    np.testing.assert_allclose(answer["probability"], probabilities.max(axis=1), atol=1e-3)


def test_the_report_records_the_processor_check_and_the_artifact_its_runtime(
    built: tuple[Path, Path, dict[str, Any]],
) -> None:
    folder, artifact, report = built
    assert report["expanded"] == {"colours": ["colours-image", "colours-model", "colours-labels"]}
    packages = {p["name"] for p in report["packages"]}
    with zipfile.ZipFile(artifact) as archive:
        names = archive.namelist()
    if "conversions" not in report:  # runtime: native
        assert {"torch", "transformers", "pillow"} <= packages
        return
    assert not packages & FRAMEWORKS and {"onnxruntime", "pillow"} <= packages
    assert not any(n.startswith(("site/torch/", "site/transformers/")) for n in names)
    (record,) = report["conversions"]
    assert record["image_processor"]["checked"] >= 8
    assert record["image_processor"]["max_abs_diff"] <= 1e-4
    assert record["outputs"]["logits"]["max_abs_diff"] <= record["tolerance"]
