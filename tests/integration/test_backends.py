"""Every model backend end to end on cpu-linux-x86_64: each example is built
into a zipapp once per test run; its held-out rows go through `predict` and
through HTTP, and both answers must be the framework's own in-process answers
and the held-out labels. Also: what each artifact carries, and no more."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.resolve.lock import read_lock
from kbuild.runtime.contract.step_types import CATALOGUE
from tests.helpers.build import (
    EXAMPLES,
    Built,
    copy_example,
    free_port,
    kbuild,
    post_json,
    wait_ready,
)

# torch 2.13 marks TorchScript deprecated (for torch.export); it still loads it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# For each example: the pipeline's outputs from the framework itself, given
# the held-out inputs: {output name: expected value}.
Reference = Callable[[dict[str, Any]], dict[str, Any]]


def _xgboost(inputs: dict[str, Any]) -> dict[str, Any]:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(EXAMPLES / "xgboost/models/cancer.json"))
    p = booster.predict(xgb.DMatrix(np.array(inputs["features"], dtype=np.float32)))
    return {"probability": np.stack([1 - p, p], axis=1), "diagnosis": np.where(p >= 0.5, "benign", "malignant")}


def _lightgbm(inputs: dict[str, Any]) -> dict[str, Any]:
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(EXAMPLES / "lightgbm/models/wine.txt"))
    probs = np.asarray(booster.predict(np.array(inputs["features"], dtype=np.float32)))
    return _labelled(probs, ["barolo", "grignolino", "barbera"], "cultivar")


def _torchscript(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    module = torch.jit.load(str(EXAMPLES / "torchscript/models/digits.pt"))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        probs = module(torch.tensor(inputs["pixels"], dtype=torch.float32)).numpy()
    return _labelled(probs, [str(d) for d in range(10)], "digit")


def _tflite(inputs: dict[str, Any]) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    x = np.array(inputs["features"], dtype=np.float32)
    interpreter = Interpreter(model_path=str(EXAMPLES / "tflite/models/iris.tflite"))
    interpreter.resize_tensor_input(0, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return _labelled(probs, ["setosa", "versicolor", "virginica"], "label")


def _pmml(inputs: dict[str, Any]) -> dict[str, Any]:
    from sklearn_pmml_model.auto_detect import auto_detect_estimator

    estimator = auto_detect_estimator(pmml=str(EXAMPLES / "pmml/models/iris.pmml"))
    table = np.column_stack([inputs[f] for f in ("sepal_length", "sepal_width", "petal_length", "petal_width")])
    return _labelled(estimator.predict_proba(table), ["setosa", "versicolor", "virginica"], "species")


def _mlflow(inputs: dict[str, Any]) -> dict[str, Any]:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(EXAMPLES / "mlflow/models/iris-model"))
    probs = model.predict(np.array(inputs["features"], dtype=np.float32))
    return _labelled(probs, ["setosa", "versicolor", "virginica"], "label")


def _image(inputs: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort
    from PIL import Image

    def pixels(text: str) -> np.ndarray:
        with Image.open(io.BytesIO(base64.b64decode(text))) as image:
            small = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32).reshape(1, 8, 8) / np.float32(255.0)

    batch = np.stack([pixels(t) for t in inputs["image"]])
    session = ort.InferenceSession(str(EXAMPLES / "image/models/digits.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"image": batch})[0]
    return _labelled(probs, [str(d) for d in range(10)], "digit")


def _labelled(probs: np.ndarray, labels: list[str], label_output: str) -> dict[str, Any]:
    return {label_output: [labels[i] for i in probs.argmax(axis=1)], "probability": probs.max(axis=1)}


@dataclass(frozen=True)
class Example:
    folder: str
    step_types: frozenset[str]
    label_output: str
    reference: Reference
    min_accuracy: float
    packages: frozenset[str]  # what its artifact must carry


EXAMPLES_BY_BACKEND = {
    "xgboost": Example(
        "xgboost", frozenset({"xgboost", "threshold"}), "diagnosis", _xgboost, 0.9, frozenset({"xgboost-cpu"})
    ),
    "lightgbm": Example(
        "lightgbm", frozenset({"lightgbm", "classify"}), "cultivar", _lightgbm, 0.95, frozenset({"lightgbm"})
    ),
    "torchscript": Example(
        "torchscript", frozenset({"torchscript", "classify"}), "digit", _torchscript, 0.95, frozenset({"torch"})
    ),
    "tflite": Example(
        "tflite", frozenset({"tflite", "classify"}), "label", _tflite, 0.9, frozenset({"ai-edge-litert"})
    ),
    "pmml": Example("pmml", frozenset({"pmml", "classify"}), "species", _pmml, 0.9, frozenset({"sklearn-pmml-model"})),
    "mlflow": Example(
        "mlflow",
        frozenset({"mlflow", "classify"}),
        "label",
        _mlflow,
        0.9,
        frozenset({"mlflow-skinny", "scikit-learn", "cloudpickle"}),
    ),
    "image": Example(
        "image", frozenset({"image", "onnx", "classify"}), "digit", _image, 0.9, frozenset({"pillow", "onnxruntime"})
    ),
}

_BUILT: dict[str, Built] = {}


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backends")


@pytest.fixture(params=sorted(EXAMPLES_BY_BACKEND))
def built(request: pytest.FixtureRequest, build_dir: Path) -> tuple[Example, Built]:
    """The example's zipapp, built once per test run (building is the slow part)."""
    name: str = request.param
    example = EXAMPLES_BY_BACKEND[name]
    if name not in _BUILT:
        work = build_dir / name
        work.mkdir()
        folder = copy_example(example.folder, work)
        out = work / "dist"
        proc = kbuild("--spin", "cpu-linux-x86_64", "-o", out, folder / "pipeline.yaml")
        assert proc.returncode == 0, proc.stderr
        assert "resolved lock" not in proc.stderr, "the example's committed lock is stale: run `kbuild lock`"
        report = json.loads((out / "build-report.json").read_text())
        _BUILT[name] = Built(Path(proc.stdout.strip().splitlines()[-1]), report, folder / "pipeline.yaml")
    return example, _BUILT[name]


def heldout(example: Example) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / example.folder / "heldout.json").read_text())
    return data


def assert_same(example: Example, got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        if name == example.label_output:
            assert got[name] == list(value)
        else:
            np.testing.assert_allclose(np.array(got[name], dtype=np.float64), value, rtol=1e-5, atol=1e-6)


def test_predict_and_http_give_the_frameworks_answers(built: tuple[Example, Built]) -> None:
    example, artifact = built
    data = heldout(example)
    expected = example.reference(data["inputs"])
    proc = subprocess.run(
        [sys.executable, str(artifact.artifact), "predict"],
        input=json.dumps(data["inputs"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    predicted = json.loads(proc.stdout)
    assert_same(example, predicted, expected)
    labels = predicted[example.label_output]
    accuracy = np.mean([a == b for a, b in zip(labels, data["labels"], strict=True)])
    assert accuracy >= example.min_accuracy, f"held-out accuracy {accuracy:.3f}"

    port = free_port()
    with subprocess.Popen(
        [sys.executable, str(artifact.artifact), "serve", "--http-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        try:
            wait_ready(port, server, timeout=120)
            status, body = post_json(port, "/predict", data["inputs"])
            assert status == 200, body
            assert_same(example, body, expected)
            status, body = post_json(port, "/predict", {"nonsense": [1]})
            assert 400 <= status < 500 and "error" in body
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0


def test_artifact_carries_its_step_modules_and_packages_only(built: tuple[Example, Built]) -> None:
    example, artifact = built
    with zipfile.ZipFile(artifact.artifact) as zf:
        names = zf.namelist()
    steps = {n.rsplit("/", 1)[1][: -len(".py")] for n in names if n.startswith("site/kbuild/runtime/steps/")}
    # each step type's module and the helpers it imports (torch_tensors for the torch types)
    modules = {Path(f).stem for t in example.step_types for f in CATALOGUE[t].files}
    assert steps == {"__init__"} | modules
    packages = {p["name"] for p in artifact.report["packages"]}
    assert example.packages <= packages
    others = {
        "torch",
        "lightgbm",
        "xgboost-cpu",
        "ai-edge-litert",
        "sklearn-pmml-model",
        "mlflow-skinny",
        "pillow",
        "onnxruntime",
        "grpcio",
        "confluent-kafka",
    } - example.packages
    assert not packages & others
    assert artifact.report["verification"]["status"] == "passed"


def test_an_onnx_only_http_artifact_is_minimal(iris_onnx: Built) -> None:
    with zipfile.ZipFile(iris_onnx.artifact) as zf:
        names = zf.namelist()
    wheels = [n.split("/", 1)[1].lower() for n in names if n.startswith("wheels/")]
    for unwanted in (
        "scikit_learn",
        "sklearn",
        "scipy",
        "torch",
        "lightgbm",
        "xgboost",
        "grpcio",
        "confluent_kafka",
        "kafka",
    ):
        assert not [w for w in wheels if w.startswith(unwanted)], unwanted
    assert {w.split("-")[0] for w in wheels} >= {"numpy", "onnxruntime"}
    runtime = [n for n in names if n.startswith("site/")]
    assert not [n for n in runtime if "grpc" in n or "kafka" in n]
    assert {n.rsplit("/", 1)[1] for n in runtime if n.startswith("site/kbuild/runtime/steps/")} == {
        "__init__.py",
        "onnx.py",
        "classify.py",
    }
    assert not [n for n in runtime if not n.startswith("site/kbuild/")]  # packages come as wheels only


def test_example_locks_are_current() -> None:
    """Each example's committed cpu-linux-x86_64 lock matches its pipeline (CI builds with --locked)."""
    from kbuild.build import load_plan
    from kbuild.resolve.lock import inputs_hash, lock_path

    for example in EXAMPLES_BY_BACKEND.values():
        plan = load_plan(EXAMPLES / example.folder / "pipeline.yaml", "cpu-linux-x86_64")
        lock = read_lock(lock_path(plan))
        assert lock.inputs_hash == inputs_hash(plan), f"{lock.path} is stale: run `kbuild lock`"
        assert example.packages <= {p.name for p in lock.packages}
