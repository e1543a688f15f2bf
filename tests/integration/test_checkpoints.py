"""Checkpoints compiled: a torch.export program and a transformers folder,
converted to ONNX at build time (and, with runtime: native, run by their
framework), must give the framework's own answers through the artifact —
computed here in-process with torch and transformers. The converted artifacts
hold no framework, the conversion is reproducible to the byte, and a
checkpoint that cannot be converted, or converts with a difference above the
step's tolerance, stops the build with its exit code and a located message."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kbuild.resolve.cache import cache_dir
from tests.helpers.build import EXAMPLES, kbuild, predict
from tests.helpers.text import replace_once

pytestmark = pytest.mark.integration

FRAMEWORK_WHEELS = {"torch", "tensorflow", "tensorflow-cpu", "keras", "transformers", "jax", "jaxlib"}


@dataclass(frozen=True)
class Built:
    pipeline: Path
    artifact: Path
    report: dict[str, Any]


def _copy(tmp: Path, example: str) -> Path:
    """The example with what it reads beside it, as in the repository."""
    shutil.copytree(EXAMPLES / example, tmp / example, ignore=shutil.ignore_patterns("dist"))
    if example == "huggingface":
        shutil.copytree(EXAMPLES / "text/models/hf", tmp / "text/models/hf")
    return tmp / example


def _build(pipeline: Path, out: Path, *extra: str) -> Built:
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", out, *extra, pipeline)
    assert proc.returncode == 0, proc.stderr
    return Built(
        pipeline, Path(proc.stdout.strip().splitlines()[-1]), json.loads((out / "build-report.json").read_text())
    )


def _torch_answers(rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    program = torch.export.load(str(EXAMPLES / "torch/models/wine.pt2")).module()
    with torch.no_grad():
        probabilities = program(torch.tensor(rows, dtype=torch.float32)).numpy()
    labels = ["barolo", "grignolino", "barbera"]
    return [labels[i] for i in probabilities.argmax(axis=1)], probabilities


def _transformers_answers(texts: list[str]) -> tuple[list[str], np.ndarray]:
    folder = str(EXAMPLES / "text/models/hf")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        encoded = tokenizer(texts, truncation=True, max_length=64, padding="longest", return_tensors="pt")
        probabilities = torch.softmax(model(**encoded).logits, dim=1).numpy()
    return [model.config.id2label[i] for i in probabilities.argmax(axis=1)], probabilities


@dataclass(frozen=True)
class Kind:
    example: str
    pipeline: str
    heldout: str  # the example whose heldout.json holds the inputs
    label: str
    reference: Callable[[Any], tuple[list[str], np.ndarray]]


KINDS = {
    "torch-onnx": Kind("torch", "pipeline.yaml", "torch", "cultivar", _torch_answers),
    "torch-native": Kind("torch", "native.yaml", "torch", "cultivar", _torch_answers),
    "huggingface-onnx": Kind("huggingface", "pipeline.yaml", "text", "topic", _transformers_answers),
    "huggingface-native": Kind("huggingface", "native.yaml", "text", "topic", _transformers_answers),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Kind, Built]:
    kind = KINDS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    return kind, _build(_copy(tmp, kind.example) / kind.pipeline, tmp / "dist")


def test_the_artifact_gives_the_frameworks_answers(built: tuple[Kind, Built]) -> None:
    kind, result = built
    assert result.report["verification"]["status"] == "passed"
    inputs = json.loads((EXAMPLES / kind.heldout / "heldout.json").read_text())["inputs"]
    labels, probabilities = kind.reference(next(iter(inputs.values())))
    answer = predict(result.artifact, inputs)
    assert answer[kind.label] == labels  # exact
    np.testing.assert_allclose(answer["probability"], probabilities.max(axis=1), atol=1e-3)
    if "scores" in answer:
        np.testing.assert_allclose(answer["scores"], probabilities, atol=1e-3)


def test_a_converted_artifact_holds_no_framework_and_a_native_one_does(built: tuple[Kind, Built]) -> None:
    kind, result = built
    packages = {p["name"] for p in result.report["packages"]}
    with zipfile.ZipFile(result.artifact) as archive:
        tops = {n.split("/")[1] for n in archive.namelist() if n.startswith("site/") and n.count("/") > 1}
    native = kind.pipeline == "native.yaml"
    if native:
        assert "torch" in packages and "conversions" not in result.report
        assert ("transformers" in packages) == (kind.example == "huggingface")
    else:
        assert not packages & FRAMEWORK_WHEELS, packages
        assert not tops & {"torch", "transformers", "tensorflow", "keras", "jax"}
        assert "onnxruntime" in packages


def test_the_report_records_each_conversion(built: tuple[Kind, Built]) -> None:
    kind, result = built
    if kind.pipeline == "native.yaml":
        return
    (record,) = result.report["conversions"]
    assert record["runtime"] == "onnx" and record["type"] == kind.example
    assert record["inputs_compared"] >= 5
    assert record["outputs"] and all(0 <= o["max_abs_diff"] <= record["tolerance"] for o in record["outputs"].values())
    model = {m["step"]: m["sha256"] for m in result.report["models"]}[record["onnx_step"]]
    assert model == record["onnx_sha256"]
    with zipfile.ZipFile(result.artifact) as archive:
        embedded = json.loads(archive.read("app/build.json"))
    assert embedded["conversions"][0]["onnx_sha256"] == record["onnx_sha256"]
    assert "cached" not in embedded["conversions"][0]  # the artifact's bytes never say how it was built
    if kind.example == "huggingface":
        assert result.report["expanded"] == {"topics": ["topics-tokenize", "topics-model", "topics-labels"]}
        assert record["tokenizer"]["agree"] == record["tokenizer"]["checked"] > 10


def test_a_conversion_made_afresh_gives_the_same_bytes(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "huggingface")
    first = _build(folder / "pipeline.yaml", tmp_path / "one")
    shutil.rmtree(cache_dir() / "convert" / "models")
    second = _build(folder / "pipeline.yaml", tmp_path / "two")
    assert second.report["conversions"][0]["cached"] is False
    assert first.report["conversions"][0]["onnx_sha256"] == second.report["conversions"][0]["onnx_sha256"]
    digest = [hashlib.sha256(b.artifact.read_bytes()).hexdigest() for b in (first, second)]
    assert digest[0] == digest[1]
    offline = _build(folder / "pipeline.yaml", tmp_path / "three", "--offline", "--locked")
    assert offline.report["conversions"][0]["cached"] is True


def test_a_difference_above_the_tolerance_fails_verification_naming_the_output(tmp_path: Path) -> None:
    pipeline = _copy(tmp_path, "huggingface") / "pipeline.yaml"
    text = pipeline.read_text()
    pipeline.write_text(
        replace_once(text, "    task: text-classification\n", "    task: text-classification\n    tolerance: 1.0e-12\n")
    )
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", tmp_path / "dist", pipeline)
    assert proc.returncode == 6, proc.stderr
    assert "output logits: largest difference" in proc.stderr and "tolerance 1e-12" in proc.stderr
    assert "runtime: native" in proc.stderr and "Traceback" not in proc.stderr


def test_a_program_that_torch_cannot_load_exits_3_at_its_line(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "torch")
    path = folder / "models/wine.pt2"
    with zipfile.ZipFile(EXAMPLES / "torch/models/wine.pt2") as source, zipfile.ZipFile(path, "w") as damaged:
        for item in source.infolist():
            data = source.read(item)
            damaged.writestr(item, data[: len(data) // 3] if "/data/weights/weight_" in item.filename else data)
    assert kbuild("validate", folder / "pipeline.yaml").returncode == 0  # its JSON is whole
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", tmp_path / "dist", folder / "pipeline.yaml")
    assert proc.returncode == 3, proc.stderr
    assert f"{folder / 'pipeline.yaml'}:17:" in proc.stderr and "torch model:" in proc.stderr
    assert "Traceback" not in proc.stderr
