"""Keras and TensorFlow checkpoints compiled: a .keras file (and the legacy
.h5 the test saves from it) and a SavedModel, converted to ONNX at build time
and, with runtime: native, run by Keras and TensorFlow in the artifact, must
give the frameworks' own answers. Those are computed by Keras and TensorFlow
themselves, in the build-side environment the build made for the conversion
(its lock holds them; the test environment does not)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.load.pipeline import load_pipeline
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import load_spin
from kbuild.resolve.build_environment import ensure_environment, lock_request
from kbuild.resolve.cache import cache_dir
from tests.helpers.build import EXAMPLES, kbuild
from tests.helpers.text import replace_once

pytestmark = pytest.mark.integration

SPIN = "cpu-linux-x86_64"
LABELS = ["barolo", "grignolino", "barbera"]
FRAMEWORK_TOPS = {"tensorflow", "keras", "torch", "transformers", "jax", "tf2onnx"}
# the frameworks' answers for ROWS (stdin, JSON) from the model at argv[1]
REFERENCE = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np, tensorflow as tf
rows = np.asarray(json.load(sys.stdin), dtype=np.float32)
path, kind = sys.argv[1], sys.argv[2]
if kind == "keras":
    import keras
    scores = np.asarray(keras.saving.load_model(path, compile=False)(rows, training=False))
elif kind == "h5":
    import keras
    keras.saving.load_model(path, compile=False).save(sys.argv[3])
    scores = np.asarray(keras.saving.load_model(sys.argv[3], compile=False)(rows, training=False))
else:
    serve = tf.saved_model.load(path).signatures["serving_default"]
    scores = serve(measurements=tf.constant(rows))["scores"].numpy()
print(json.dumps(scores.tolist()))
"""


@dataclass(frozen=True)
class Built:
    artifact: Path
    report: dict[str, Any]
    stderr: str


def _build(pipeline: Path, out: Path, *extra: str) -> Built:
    proc = kbuild("--spin", SPIN, "-o", out, *extra, pipeline)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "build-report.json").read_text())
    return Built(Path(proc.stdout.strip().splitlines()[-1]), report, proc.stderr)


def _framework_python() -> Path:
    """The build-side environment's interpreter (made by the builds, or here)."""
    plan = make_plan(load_pipeline(EXAMPLES / "keras/pipeline.yaml"), load_spin(SPIN))
    return ensure_environment(lock_request(plan), cache=cache_dir()).python


def _reference(model: Path, kind: str, rows: list[list[float]], *extra: Path) -> np.ndarray:
    proc = subprocess.run(
        [str(_framework_python()), "-c", REFERENCE, str(model), kind, *map(str, extra)],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))


def _predict(artifact: Path, rows: list[list[float]]) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(artifact), "predict"],
        input=json.dumps({"measurements": rows}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer, proc.stderr


def _rows(example: str) -> list[list[float]]:
    rows: list[list[float]] = json.loads((EXAMPLES / example / "heldout.json").read_text())["inputs"]["measurements"]
    return rows


CASES = {
    "keras-onnx": ("keras", "pipeline.yaml", "models/wine.keras", "keras"),
    "keras-native": ("keras", "native.yaml", "models/wine.keras", "keras"),
    "tensorflow-onnx": ("tensorflow", "pipeline.yaml", "models/wine_savedmodel", "savedmodel"),
    "tensorflow-native": ("tensorflow", "native.yaml", "models/wine_savedmodel", "savedmodel"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Built]:
    example, pipeline, _, _ = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    shutil.copytree(EXAMPLES / example, tmp / example)
    return request.param, _build(tmp / example / pipeline, tmp / "dist")


def test_the_artifact_gives_the_frameworks_answers(built: tuple[str, Built]) -> None:
    case, result = built
    example, _, model, kind = CASES[case]
    assert result.report["verification"]["status"] == "passed"
    rows = _rows(example)
    scores = _reference(EXAMPLES / example / model, kind, rows)
    answer, stderr = _predict(result.artifact, rows)
    assert answer["cultivar"] == [LABELS[i] for i in scores.argmax(axis=1)]  # exact
    np.testing.assert_allclose(answer["probability"], scores.max(axis=1), atol=1e-3)
    # TensorFlow's start-up notices stay out of the artifact's output
    assert "I0000" not in stderr and "absl::InitializeLog" not in stderr, stderr


def test_a_converted_artifact_holds_no_framework_and_a_native_one_does(built: tuple[str, Built]) -> None:
    case, result = built
    packages = {p["name"] for p in result.report["packages"]}
    with zipfile.ZipFile(result.artifact) as archive:
        names = archive.namelist()
    tops = {n.split("/")[1] for n in names if n.startswith("site/") and n.count("/") > 1}
    wheels = {n.split("/")[1].split("-")[0] for n in names if n.startswith("wheels/")}
    if case.endswith("native"):
        assert {"tensorflow-cpu", "keras"} <= packages and "conversions" not in result.report
        assert {"tensorflow_cpu", "keras"} <= wheels
    else:
        assert not packages & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch"}, packages
        assert not (tops | wheels) & FRAMEWORK_TOPS and "onnxruntime" in packages
        assert "tensorflow_cpu" not in wheels
        (record,) = result.report["conversions"]
        assert record["type"] == case.split("-")[0] and record["inputs_compared"] >= 5
        assert set(record["outputs"]) == {"scores"}
        assert 0 <= record["outputs"]["scores"]["max_abs_diff"] <= record["tolerance"] == 1e-4
        assert {"tensorflow", "tf2onnx"} <= set(record["framework"])


def test_a_legacy_h5_file_converts_to_the_same_answers(tmp_path: Path) -> None:
    folder = tmp_path / "keras"
    shutil.copytree(EXAMPLES / "keras", folder)
    rows = _rows("keras")
    expected = _reference(folder / "models/wine.keras", "h5", rows, folder / "models/wine.h5")
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(replace_once(pipeline.read_text(), "model: models/wine.keras", "model: models/wine.h5"))
    answer, _ = _predict(_build(pipeline, tmp_path / "dist").artifact, rows)
    assert answer["cultivar"] == [LABELS[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(answer["probability"], expected.max(axis=1), atol=1e-3)


def test_a_conversion_made_afresh_gives_the_same_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "tensorflow"
    shutil.copytree(EXAMPLES / "tensorflow", folder)
    first = _build(folder / "pipeline.yaml", tmp_path / "one")
    shutil.rmtree(cache_dir() / "convert" / "models")
    second = _build(folder / "pipeline.yaml", tmp_path / "two")
    assert second.report["conversions"][0]["cached"] is False
    assert first.report["conversions"][0]["onnx_sha256"] == second.report["conversions"][0]["onnx_sha256"]
    digests = {hashlib.sha256(b.artifact.read_bytes()).hexdigest() for b in (first, second)}
    assert len(digests) == 1


def test_a_keras_file_whose_weights_are_damaged_exits_3_at_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "keras"
    shutil.copytree(EXAMPLES / "keras", folder)
    with zipfile.ZipFile(EXAMPLES / "keras/models/wine.keras") as source:
        with zipfile.ZipFile(folder / "models/wine.keras", "w") as damaged:
            for item in source.infolist():
                data = source.read(item)
                damaged.writestr(item, data[: len(data) // 3] if item.filename.endswith(".h5") else data)
    assert kbuild("validate", folder / "pipeline.yaml").returncode == 0  # its config.json is whole
    proc = kbuild("--spin", SPIN, "-o", tmp_path / "dist", folder / "pipeline.yaml")
    assert proc.returncode == 3, proc.stderr
    assert f"{folder / 'pipeline.yaml'}:17:" in proc.stderr and "keras model: Keras cannot load" in proc.stderr
    assert "Traceback" not in proc.stderr
