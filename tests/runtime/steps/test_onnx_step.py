"""Each step type, through Pipeline.load / Pipeline.run on real artifact roots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import (
    SETOSA,
    VIRGINICA,
    MakeRoot,
    iris_pipeline,
)
from tests.helpers.steps import FP32_ROWS, load, run, spec

# --- onnx -------------------------------------------------------------------


def test_onnx_and_classify_predict_iris(make_root: MakeRoot, models: dict[str, Path]) -> None:
    p = load(make_root, iris_pipeline(), models={"model": models["onnx"]})
    out = p.run(decode_inputs({"features": [SETOSA, VIRGINICA]}, p.spec.inputs))
    assert out is not None
    assert out["label"].tolist() == ["setosa", "virginica"]
    expected = joblib.load(models["sklearn"]).predict_proba(np.array([SETOSA, VIRGINICA], dtype=np.float32))
    np.testing.assert_allclose(out["probability"], expected.max(axis=1), rtol=1e-5)
    assert out["probability"].dtype == np.float32


def test_onnx_single_input_form_and_dtype_cast(make_root: MakeRoot, models: dict[str, Path]) -> None:
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


def test_onnx_zipmap_output_becomes_a_class_ordered_matrix(make_root: MakeRoot, models: dict[str, Path]) -> None:
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
    expected = joblib.load(models["sklearn"]).predict_proba(np.array([SETOSA, VIRGINICA], dtype=np.float32))
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
    pipeline["steps"][0]["options"] = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    monkeypatch.setenv("KBUILD_ONNX_PROVIDER_FALLBACK", "1")
    p = load(make_root, pipeline, models={"model": models["onnx"]})
    assert run(p, features=[SETOSA]) == {
        "label": ["setosa"],
        "probability": pytest.approx([0.98], abs=0.01),
    }
