"""Each step type, through Pipeline.load / Pipeline.run on real artifact roots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from kbuild.runtime.errors import LoadError, StepError
from kbuild.runtime.pipeline import Pipeline
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import (
    IRIS_LABELS,
    SETOSA,
    VIRGINICA,
    MakeRoot,
    iris_pipeline,
)

FP32_ROWS = {"datatype": "FP32", "shape": [-1, 4]}


def spec(
    inputs: dict[str, Any], outputs: dict[str, Any], steps: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"kbuild": 1, "name": "t", "inputs": inputs, "outputs": outputs, "steps": steps}


def load(make_root: MakeRoot, pipeline: dict[str, Any], **kwargs: Any) -> Pipeline:
    return Pipeline.load(make_root(pipeline, **kwargs) / "app")


def run(p: Pipeline, **inputs: Any) -> dict[str, Any] | None:
    out = p.run(decode_inputs(inputs, p.spec.inputs))
    return None if out is None else {k: v.tolist() for k, v in out.items()}


# --- onnx -------------------------------------------------------------------


def test_onnx_and_classify_predict_iris(make_root: MakeRoot, models: dict[str, Path]) -> None:
    p = load(make_root, iris_pipeline(), models={"model": models["onnx"]})
    out = p.run(decode_inputs({"features": [SETOSA, VIRGINICA]}, p.spec.inputs))
    assert out is not None
    assert out["label"].tolist() == ["setosa", "virginica"]
    expected = joblib.load(models["sklearn"]).predict_proba(
        np.array([SETOSA, VIRGINICA], dtype=np.float32)
    )
    np.testing.assert_allclose(out["probability"], expected.max(axis=1), rtol=1e-5)
    assert out["probability"].dtype == np.float32


def test_onnx_single_input_form_and_dtype_cast(
    make_root: MakeRoot, models: dict[str, Path]
) -> None:
    pipeline = spec(
        {"features": {"datatype": "FP64", "shape": [-1, 4]}},  # the model wants float32
        {"probs": {"datatype": "FP32", "shape": [-1, 3]}},
        [
            {
                "name": "model",
                "type": "onnx",
                "input": "features",
                "outputs": {"probabilities": "probs"},
            }
        ],
    )
    p = load(make_root, pipeline, models={"model": models["onnx"]})
    out = run(p, features=[SETOSA])
    assert out is not None
    assert np.argmax(out["probs"][0]) == 0


def test_onnx_zipmap_output_becomes_a_class_ordered_matrix(
    make_root: MakeRoot, models: dict[str, Path]
) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {"probs": {"datatype": "FP32", "shape": [-1, 3]}},
        [
            {
                "name": "model",
                "type": "onnx",
                "input": "features",
                "outputs": {"output_probability": "probs"},
            }
        ],
    )
    p = load(make_root, pipeline, models={"model": models["zipmap"]})
    out = p.run(decode_inputs({"features": [SETOSA, VIRGINICA]}, p.spec.inputs))
    assert out is not None
    expected = joblib.load(models["sklearn"]).predict_proba(
        np.array([SETOSA, VIRGINICA], dtype=np.float32)
    )
    np.testing.assert_allclose(out["probs"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"input": "features", "output": "probs"},
            "the model has 2 outputs (label, probabilities); map them with outputs",
        ),
        (
            {"inputs": {"x": "features"}, "outputs": {"probabilities": "probs"}},
            "the model has no input 'x' (it has X)",
        ),
        (
            {"input": "features", "outputs": {"proba": "probs"}},
            "the model has no output 'proba' (it has label, probabilities)",
        ),
        (
            {
                "input": "features",
                "outputs": {"probabilities": "probs"},
                "options": {"providers": ["NoSuchExecutionProvider"]},
            },
            "onnxruntime provider(s) NoSuchExecutionProvider not available here",
        ),
    ],
)
def test_onnx_configuration_errors_name_the_step(
    make_root: MakeRoot, models: dict[str, Path], fields: dict[str, Any], message: str
) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {"probs": {"datatype": "FP32"}},
        [{"name": "model", "type": "onnx", **fields}],
    )
    with pytest.raises(LoadError) as info:
        load(make_root, pipeline, models={"model": models["onnx"]})
    assert info.value.message.startswith("step 'model' (onnx): ")
    assert message in info.value.message


def test_onnx_provider_fallback_is_opt_in(
    make_root: MakeRoot, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = iris_pipeline()
    pipeline["steps"][0]["options"] = {
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]
    }
    monkeypatch.setenv("KBUILD_ONNX_PROVIDER_FALLBACK", "1")
    p = load(make_root, pipeline, models={"model": models["onnx"]})
    assert run(p, features=[SETOSA]) == {
        "label": ["setosa"],
        "probability": pytest.approx([0.98], abs=0.01),
    }


# --- sklearn ----------------------------------------------------------------


def test_sklearn_predict_then_classify_indices(
    make_root: MakeRoot, models: dict[str, Path]
) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {"label": {"datatype": "BYTES", "shape": [-1]}, "p": {"datatype": "FP32", "shape": [-1]}},
        [
            {"name": "model", "type": "sklearn", "input": "features", "output": "cls"},
            {
                "name": "names",
                "type": "classify",
                "input": "cls",
                "labels": IRIS_LABELS,
                "outputs": {"label": "label", "probability": "p"},
            },
        ],
    )
    p = load(make_root, pipeline, models={"model": models["sklearn"]})
    assert run(p, features=[SETOSA, VIRGINICA]) == {
        "label": ["setosa", "virginica"],
        "p": [1.0, 1.0],
    }


def test_sklearn_predict_proba_then_top2(make_root: MakeRoot, models: dict[str, Path]) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {
            "labels": {"datatype": "BYTES", "shape": [-1, 2]},
            "scores": {"datatype": "FP32", "shape": [-1, 2]},
        },
        [
            {
                "name": "model",
                "type": "sklearn",
                "method": "predict_proba",
                "input": "features",
                "output": "probs",
            },
            {
                "name": "top",
                "type": "classify",
                "input": "probs",
                "labels": IRIS_LABELS,
                "top_k": 2,
                "outputs": {"label": "labels", "probability": "scores"},
            },
        ],
    )
    p = load(make_root, pipeline, models={"model": models["sklearn"]})
    out = run(p, features=[VIRGINICA])
    assert out is not None
    assert out["labels"] == [["virginica", "versicolor"]]
    assert out["scores"][0][0] > out["scores"][0][1]


def test_sklearn_transform_and_decision_function(
    make_root: MakeRoot,
    models: dict[str, Path],
    tmp_path: Path,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    from sklearn.preprocessing import StandardScaler

    x, _ = iris
    scaler_path = tmp_path / "scaler.joblib"
    joblib.dump(StandardScaler().fit(x), scaler_path)
    pipeline = spec(
        {"features": FP32_ROWS},
        {
            "scaled": {"datatype": "FP64", "shape": [-1, 4]},
            "margin": {"datatype": "FP64", "shape": [-1, 3]},
        },
        [
            {
                "name": "scaler",
                "type": "sklearn",
                "method": "transform",
                "input": "features",
                "output": "scaled",
            },
            {
                "name": "model",
                "type": "sklearn",
                "method": "decision_function",
                "input": "features",
                "output": "margin",
            },
        ],
    )
    p = load(make_root, pipeline, models={"scaler": scaler_path, "model": models["sklearn"]})
    out = run(p, features=[SETOSA])
    assert out is not None
    np.testing.assert_allclose(
        out["scaled"], joblib.load(scaler_path).transform(np.array([SETOSA], np.float32)), rtol=1e-6
    )
    assert np.argmax(out["margin"][0]) == 0


def test_sklearn_string_classes_are_bytes(
    make_root: MakeRoot, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    path = tmp_path / "tree.pkl"
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(x, np.array(IRIS_LABELS)[y]), path)
    pipeline = spec(
        {"features": FP32_ROWS},
        {"label": {"datatype": "BYTES", "shape": [-1]}},
        [{"name": "model", "type": "sklearn", "input": "features", "output": "label"}],
    )
    p = load(make_root, pipeline, models={"model": path})
    assert run(p, features=[SETOSA, VIRGINICA]) == {"label": ["setosa", "virginica"]}


def test_sklearn_unknown_method_is_a_load_error(
    make_root: MakeRoot, models: dict[str, Path]
) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {"y": {"datatype": "FP32"}},
        [{"name": "model", "type": "sklearn", "method": "fit", "input": "features", "output": "y"}],
    )
    with pytest.raises(
        LoadError, match=r"step 'model' \(sklearn\): method 'fit' is not one of predict"
    ):
        load(make_root, pipeline, models={"model": models["sklearn"]})


# --- python -----------------------------------------------------------------

FILTER_CODE = """
import numpy as np

def make(config):
    factor = config["factor"]

    def step(variables):
        x = variables["x"]
        if (x < 0).any():
            raise ValueError("negative input")
        if (x == 0).all():
            return None  # drop the record
        return {"y": (x * factor).tolist(), "note": ["scaled"] * len(x)}

    return step
"""


def python_pipeline(**step: Any) -> dict[str, Any]:
    return spec(
        {"x": {"datatype": "FP32", "shape": [-1]}},
        {"y": {"datatype": "FP32", "shape": [-1]}, "note": {"datatype": "BYTES", "shape": [-1]}},
        [{"name": "custom", "type": "python", "config": {"factor": 3}, **step}],
    )


def test_python_step_sets_variables_from_lists(make_root: MakeRoot) -> None:
    p = load(
        make_root,
        python_pipeline(function="filters:make", code="filters.py"),
        code={"custom": {"filters.py": FILTER_CODE}},
    )
    out = p.run(decode_inputs({"x": [1, 2]}, p.spec.inputs))
    assert out is not None
    # the step returned Python floats (float64): the declared FP32 wins
    assert out["y"].dtype == np.float32 and out["y"].tolist() == [3.0, 6.0]
    assert out["note"].dtype == object and out["note"].tolist() == ["scaled", "scaled"]


def test_python_step_drops_and_fails_with_the_step_name(make_root: MakeRoot) -> None:
    p = load(
        make_root,
        python_pipeline(function="filters:make", code="filters.py"),
        code={"custom": {"filters.py": FILTER_CODE}},
    )
    assert run(p, x=[0, 0]) is None
    with pytest.raises(StepError) as info:
        run(p, x=[-1])
    assert info.value.step == "custom"
    assert info.value.message == "step 'custom' (python) failed: ValueError: negative input"


def test_python_step_code_folder_holding_a_package(make_root: MakeRoot) -> None:
    code = {"src/rtpkg_a/__init__.py": "", "src/rtpkg_a/mod.py": FILTER_CODE}
    p = load(
        make_root, python_pipeline(function="rtpkg_a.mod:make", code="src"), code={"custom": code}
    )
    assert run(p, x=[1]) == {"y": [3.0], "note": ["scaled"]}
    # `code` pointing at the package folder itself works too
    code = {"rtpkg_b/__init__.py": "", "rtpkg_b/mod.py": FILTER_CODE}
    p = load(
        make_root,
        python_pipeline(function="rtpkg_b.mod:make", code="rtpkg_b"),
        code={"custom": code},
    )
    assert run(p, x=[2]) == {"y": [6.0], "note": ["scaled"]}


@pytest.mark.parametrize(
    "function, source, message",
    [
        ("rt_missing_attr:make", "X = 1\n", "rt_missing_attr has no attribute 'make'"),
        ("rt_no_colon", "", "function 'rt_no_colon' must look like 'package.module:factory'"),
        (
            "rt_not_callable:make",
            "def make(config):\n    return 42\n",
            "rt_not_callable:make(config) returned int, not a callable",
        ),
        (
            "rt_missing_dep:make",
            "import rt_no_such_module\n",
            "needs the Python module 'rt_no_such_module'",
        ),
    ],
)
def test_python_step_load_errors(
    make_root: MakeRoot, function: str, source: str, message: str
) -> None:
    module = function.split(":")[0]
    pipeline = python_pipeline(function=function, code=f"{module}.py")
    with pytest.raises(LoadError) as info:
        load(make_root, pipeline, code={"custom": {f"{module}.py": source}})
    assert info.value.message.startswith("step 'custom' (python): ")
    assert message in info.value.message


def test_python_step_bad_return_is_a_step_error(make_root: MakeRoot) -> None:
    source = "def make(config):\n    return lambda v: [1, 2]\n"
    p = load(
        make_root,
        python_pipeline(function="rt_bad_return:make", code="rt_bad_return.py"),
        code={"custom": {"rt_bad_return.py": source}},
    )
    with pytest.raises(StepError, match=r"returned list, expected a dict of variables or None"):
        run(p, x=[1])


# --- fields -----------------------------------------------------------------


def fields_pipeline(datatype: str = "FP32") -> dict[str, Any]:
    return spec(
        {
            "a": {"datatype": "FP64", "shape": [-1]},
            "b": {"datatype": "INT64", "shape": [-1, 1]},
            "c": {"datatype": "FP32", "shape": []},
        },
        {"x": {"datatype": datatype, "shape": [-1, 3]}},
        [
            {
                "name": "record",
                "type": "fields",
                "fields": ["a", "b", "c"],
                "output": "x",
                "datatype": datatype,
            }
        ],
    )


def test_fields_stacks_columns_and_repeats_scalars(make_root: MakeRoot) -> None:
    p = load(make_root, fields_pipeline())
    out = p.run(decode_inputs({"a": [1.5, 2.5], "b": [[10], [20]], "c": 7}, p.spec.inputs))
    assert out is not None
    assert out["x"].dtype == np.float32
    assert out["x"].tolist() == [[1.5, 10, 7], [2.5, 20, 7]]
    # one JSON record: every field a scalar (a and b get the batch axis)
    p64 = load(make_root, fields_pipeline("FP64"))
    assert run(p64, a=1.0, b=[2], c=3) == {"x": [[1.0, 2.0, 3.0]]}


def test_fields_of_different_lengths_fail(make_root: MakeRoot) -> None:
    p = load(make_root, fields_pipeline())
    with pytest.raises(
        StepError,
        match=r"step 'record' \(fields\) failed: fields have different lengths \(a: 2, b: 1\)",
    ):
        run(p, a=[1, 2], b=[[1]], c=0)


# --- scale ------------------------------------------------------------------


def scale_pipeline(mean: Any, std: Any) -> dict[str, Any]:
    return spec(
        {"features": FP32_ROWS},
        {"z": {"datatype": "FP32", "shape": [-1, 4]}},
        [
            {
                "name": "norm",
                "type": "scale",
                "input": "features",
                "output": "z",
                "mean": mean,
                "std": std,
            }
        ],
    )


def test_scale_per_feature_and_scalar(make_root: MakeRoot) -> None:
    p = load(make_root, scale_pipeline([1, 2, 3, 4], [1, 2, 4, 8]))
    out = p.run(decode_inputs({"features": [[2, 4, 7, 12]]}, p.spec.inputs))
    assert out is not None and out["z"].dtype == np.float32
    assert out["z"].tolist() == [[1.0, 1.0, 1.0, 1.0]]
    p = load(make_root, scale_pipeline(1, 0.5))
    assert run(p, features=[[1, 2, 3, 4]]) == {"z": [[0.0, 2.0, 4.0, 6.0]]}


def test_scale_errors(make_root: MakeRoot) -> None:
    with pytest.raises(LoadError, match="std must not contain 0"):
        load(make_root, scale_pipeline(0, [1, 0, 1, 1]))
    p = load(make_root, scale_pipeline([0, 0, 0], 1))
    with pytest.raises(StepError, match=r"mean/std have 3 values for its last axis"):
        run(p, features=[[1, 2, 3, 4]])


# --- classify ---------------------------------------------------------------


def classify_pipeline(
    top_k: int = 1, scores: dict[str, Any] | None = None, outputs: dict[str, str] | None = None
) -> dict[str, Any]:
    shape = [-1] if top_k == 1 else [-1, top_k]
    outputs = outputs or {"label": "label", "probability": "probability"}
    declared = {
        "label": {"datatype": "BYTES", "shape": shape},
        "probability": {"datatype": "FP32", "shape": shape},
    }
    return spec(
        {"scores": scores or {"datatype": "FP32", "shape": [-1, 3]}},
        {v: declared[k] for k, v in outputs.items()},
        [
            {
                "name": "names",
                "type": "classify",
                "input": "scores",
                "labels": IRIS_LABELS,
                "top_k": top_k,
                "outputs": outputs,
            }
        ],
    )


def test_classify_top1_and_topk(make_root: MakeRoot) -> None:
    scores = [[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]
    p = load(make_root, classify_pipeline())
    assert run(p, scores=scores) == {
        "label": ["versicolor", "setosa"],
        "probability": pytest.approx([0.7, 0.5]),
    }
    p = load(make_root, classify_pipeline(top_k=3))
    out = run(p, scores=scores)
    assert out is not None
    assert out["label"] == [
        ["versicolor", "virginica", "setosa"],
        ["setosa", "virginica", "versicolor"],
    ]
    np.testing.assert_allclose(out["probability"], [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]], rtol=1e-6)


def test_classify_one_output_and_class_indices(make_root: MakeRoot) -> None:
    p = load(
        make_root,
        classify_pipeline(scores={"datatype": "INT64", "shape": [-1]}, outputs={"label": "label"}),
    )
    assert run(p, scores=[2, 0]) == {"label": ["virginica", "setosa"]}
    with pytest.raises(StepError, match="class index out of range for 3 labels"):
        run(p, scores=[3])


def test_classify_errors(make_root: MakeRoot) -> None:
    with pytest.raises(LoadError, match="top_k 4 exceeds the 3 labels"):
        load(make_root, classify_pipeline(top_k=4))
    p = load(make_root, classify_pipeline(scores={"datatype": "FP32", "shape": [-1, -1]}))
    with pytest.raises(StepError, match="scores have 2 columns, there are 3 labels"):
        run(p, scores=[[0.5, 0.5]])


# --- threshold --------------------------------------------------------------


def threshold_pipeline(shape: list[int], out: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return spec(
        {"score": {"datatype": "FP32", "shape": shape}},
        {"decision": out},
        [{"name": "cut", "type": "threshold", "input": "score", "output": "decision", **fields}],
    )


def test_threshold_booleans_labels_and_binary_probabilities(make_root: MakeRoot) -> None:
    p = load(make_root, threshold_pipeline([-1], {"datatype": "BOOL", "shape": [-1]}))
    assert run(p, score=[0.2, 0.5, 0.9]) == {"decision": [False, True, True]}
    p = load(
        make_root,
        threshold_pipeline(
            [-1], {"datatype": "BYTES", "shape": [-1]}, threshold=0.8, labels=["ham", "spam"]
        ),
    )
    assert run(p, score=[0.2, 0.9]) == {"decision": ["ham", "spam"]}
    p = load(make_root, threshold_pipeline([-1, 2], {"datatype": "BOOL", "shape": [-1]}))
    assert run(p, score=[[0.9, 0.1], [0.3, 0.7]]) == {"decision": [False, True]}


def test_threshold_labels_must_be_two(make_root: MakeRoot) -> None:
    with pytest.raises(LoadError, match=r"labels must be a list of two: \[negative, positive\]"):
        load(make_root, threshold_pipeline([-1], {"datatype": "BYTES"}, labels=["a", "b", "c"]))
