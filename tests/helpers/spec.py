"""Shared by the tests split from test_spec.py."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline
from tests.helpers.text import replace_once

MODEL_BYTES = b"not really onnx, but bytes with a hash"
MODEL_SHA = hashlib.sha256(MODEL_BYTES).hexdigest()

# DESIGN.md section 3's example. Line numbers matter to the tests below:
#  1 kbuild   5 features   10 - name: model   16 - name: labels   21 serve
#  2 name     7 label      12 model           18 input: probs     26 - inputs
IRIS = """\
kbuild: 1
name: iris
version: "1.0.0"
inputs:
  features: {datatype: FP32, shape: [-1, 4]}
outputs:
  label: {datatype: BYTES, shape: [-1]}
  probability: {datatype: FP32, shape: [-1]}
steps:
  - name: model
    type: onnx
    model: models/iris.onnx
    sha256: "SHA"
    inputs: {float_input: features}
    outputs: {probabilities: probs}
  - name: labels
    type: classify
    input: probs
    labels: [setosa, versicolor, virginica]
    outputs: {label: label, probability: probability}
serve:
  http: {port: 8080}
  grpc: {port: 8081}
  batching: {max_batch_size: 32, max_latency_ms: 2}
samples:
  - inputs: {features: [[5.1, 3.5, 1.4, 0.2]]}
    expect: {label: [setosa]}
""".replace("SHA", MODEL_SHA)

WriteSpec = Callable[..., Path]  # (text=IRIS, name="pipeline.yaml") -> the file


@pytest.fixture
def write_spec(tmp_path: Path) -> WriteSpec:
    """Write a pipeline file (and the dummy model it names) into tmp_path."""

    def write(text: str = IRIS, name: str = "pipeline.yaml") -> Path:
        models = tmp_path / "models"
        models.mkdir(exist_ok=True)
        (models / "iris.onnx").write_bytes(MODEL_BYTES)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def mutate(old: str, new: str, text: str = IRIS) -> str:
    return replace_once(text, old, new)


def problems_of(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    error = info.value
    assert error.exit_code == 3
    assert error.problems, "a SpecError must carry its problems"
    return error
