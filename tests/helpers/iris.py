"""The iris pipeline, once: examples/iris/pipeline.yaml, as tests use it.

`iris_pipeline()` is the example turned into an artifact's pipeline.json
document (model paths under app/models/STEP/, the CPU provider of the spin),
with any top-level field replaced."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml

from tests.helpers.build import EXAMPLES

EXAMPLE = EXAMPLES / "iris" / "pipeline.yaml"
MODELS = EXAMPLES / "iris" / "models"
LABELS = ["setosa", "versicolor", "virginica"]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@cache
def _example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return document


def iris_pipeline(
    *, onnx_input: str = "float_input", model: str | None = "models/model/iris.onnx", **changes: Any
) -> dict[str, Any]:
    """features -> onnx -> classify as pipeline.json holds it. `onnx_input` names
    the ONNX model's input; `model` is its path in app/ (None: left for the
    caller to place); `changes` replace top-level fields (serve, name, ...)."""
    document = copy.deepcopy(_example())
    for key in ("serve", "samples"):
        document.pop(key)
    onnx = document["steps"][0]
    onnx["inputs"] = {onnx_input: "features"}
    onnx["options"] = {"providers": ["CPUExecutionProvider"]}
    if model is None:
        del onnx["model"]
    else:
        onnx["model"] = model
    document.update(changes)
    return document
