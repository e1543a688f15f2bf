"""Loading a pipeline: model hashes, missing pieces, output declarations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError, PipelineError, StepError
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import SETOSA, MakeRoot, iris_pipeline, sha256


def test_model_hash_is_checked_at_load(make_root: MakeRoot, models: dict[str, Path]) -> None:
    pipeline = iris_pipeline()
    pipeline["steps"][0]["sha256"] = sha256(models["onnx"])
    root = make_root(pipeline, models={"model": models["onnx"]})
    PipelineRunner.load(root / "app")  # the right hash loads

    model = root / "app" / "models" / "model" / "iris.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(LoadError) as info:
        PipelineRunner.load(root / "app")
    message = info.value.message
    assert message.startswith("step 'model' (onnx): model 'models/model/iris.onnx' has sha256 ")
    assert f"expected {sha256(models['onnx'])}" in message
    assert "refusing to start" in message


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["steps"][0].update(model="models/model/missing.onnx"),
            "step 'model' (onnx): model 'models/model/missing.onnx' not found",
        ),
        (
            lambda s: s["steps"][0].update(model="../../etc/passwd"),
            "step 'model' (onnx): model path '../../etc/passwd' leaves the app folder",
        ),
        (
            lambda s: s["steps"][1].update(type="xgboostish"),
            "step 'labels' (xgboostish): this step type is not in this artifact (no module kbuild.runtime.steps.xgboostish)",
        ),
        (lambda s: s["steps"][1].update(type="../x"), "step 'labels': invalid type '../x'"),
        (
            lambda s: s["steps"][1].pop("labels"),
            "step 'labels' (classify): labels must be a non-empty list",
        ),
        (lambda s: s["steps"][1].pop("input"), "step 'labels' (classify): missing field 'input'"),
    ],
)
def test_load_errors_name_the_step(make_root: MakeRoot, models: dict[str, Path], change: Any, message: str) -> None:
    pipeline = iris_pipeline()
    root = make_root(pipeline, models={"model": models["onnx"]})
    path = root / "app" / "pipeline.json"
    written = json.loads(path.read_text())
    change(written)
    path.write_text(json.dumps(written))
    with pytest.raises(LoadError) as info:
        PipelineRunner.load(root / "app")
    assert info.value.message.startswith(message)


def test_a_missing_model_library_is_named(
    make_root: MakeRoot, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    root = make_root(iris_pipeline(), models={"model": models["onnx"]})
    # As if the artifact had been built without onnxruntime.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delitem(sys.modules, "kbuild.runtime.steps.onnx", raising=False)
    with pytest.raises(LoadError, match=r"step 'model' \(onnx\): needs the Python module 'onnxruntime'"):
        PipelineRunner.load(root / "app")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "cannot read"),
        ('{"kbuild": 2}', "unsupported format 2"),
        (
            '{"kbuild": 1, "name": "x", "inputs": {}, "outputs": {"y": {"datatype": "FP32"}}, "steps": []}',
            "'inputs' must be a non-empty object",
        ),
    ],
)
def test_bad_pipeline_json(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "pipeline.json").write_text(text)
    with pytest.raises(LoadError, match=message):
        PipelineSpec.read(tmp_path)


def test_missing_pipeline_json_says_what_root_is(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="is --root an artifact root"):
        PipelineSpec.read(tmp_path)


def python_only(outputs: dict[str, Any], returns: str) -> dict[str, Any]:
    return {
        "kbuild": 1,
        "name": "t",
        "inputs": {"x": {"datatype": "FP32", "shape": [-1]}},
        "outputs": outputs,
        "steps": [{"name": "f", "type": "python", "function": "rt_out_mod:make", "code": "rt_out_mod.py"}],
        "_returns": returns,
    }


@pytest.mark.parametrize(
    "outputs, returns, message",
    [
        ({"y": {"datatype": "FP32"}}, "{}", "output 'y' was not set by any step"),
        (
            {"y": {"datatype": "INT64"}},
            "{'y': [1.5]}",
            "output 'y': declared INT64, the pipeline produced float64",
        ),
        (
            {"y": {"datatype": "FP32"}},
            "{'y': ['a']}",
            "output 'y': declared FP32, the pipeline produced object",
        ),
        (
            {"y": {"datatype": "BYTES"}},
            "{'y': [1]}",
            "output 'y': declared BYTES, the pipeline produced int64",
        ),
        (
            {"y": {"datatype": "FP32", "shape": [-1, 2]}},
            "{'y': [1.0]}",
            "output 'y': declared shape [-1, 2], the pipeline produced [1]",
        ),
    ],
)
def test_outputs_must_fit_their_declaration(
    make_root: MakeRoot, outputs: dict[str, Any], returns: str, message: str
) -> None:
    pipeline = python_only(outputs, returns)
    # each case gets its own module name: modules are cached in sys.modules
    module = f"rt_out_{abs(hash((json.dumps(outputs), returns)))}"
    pipeline["steps"][0].update(function=f"{module}:make", code=f"{module}.py")
    source = f"def make(config):\n    return lambda v: {pipeline.pop('_returns')}\n"
    p = PipelineRunner.load(make_root(pipeline, code={"f": {f"{module}.py": source}}) / "app")
    with pytest.raises(PipelineError) as info:
        p.run({"x": np.array([1.0], dtype=np.float32)})
    assert info.value.message == message
    assert not isinstance(info.value, StepError)


def test_reading_an_unset_variable_names_it(make_root: MakeRoot, models: dict[str, Path]) -> None:
    pipeline = iris_pipeline()
    pipeline["steps"][1]["input"] = "probz"
    p = PipelineRunner.load(make_root(pipeline, models={"model": models["onnx"]}) / "app")
    with pytest.raises(StepError) as info:
        p.run(decode_inputs({"features": [SETOSA]}, p.spec.inputs))
    assert info.value.step == "labels"
    assert info.value.message == "step 'labels' (classify) failed: variable 'probz' is not set (set: features, probs)"
