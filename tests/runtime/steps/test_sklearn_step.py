"""Each step type, through Pipeline.load / Pipeline.run on real artifact roots."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError
from tests.helpers.runtime import (
    IRIS_LABELS,
    SETOSA,
    VIRGINICA,
    MakeRoot,
)
from tests.helpers.steps import FP32_ROWS, load, run, spec

# --- sklearn ----------------------------------------------------------------


def test_sklearn_predict_then_classify_indices(make_root: MakeRoot, models: dict[str, Path]) -> None:
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


def test_sklearn_unknown_method_is_a_load_error(make_root: MakeRoot, models: dict[str, Path]) -> None:
    pipeline = spec(
        {"features": FP32_ROWS},
        {"y": {"datatype": "FP32"}},
        [{"name": "model", "type": "sklearn", "method": "fit", "input": "features", "output": "y"}],
    )
    with pytest.raises(LoadError, match=r"step 'model' \(sklearn\): method 'fit' is not one of predict"):
        load(make_root, pipeline, models={"model": models["sklearn"]})
