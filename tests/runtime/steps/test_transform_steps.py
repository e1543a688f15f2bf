"""Each step type, through Pipeline.load / Pipeline.run on real artifact roots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError, StepError
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import (
    IRIS_LABELS,
    MakeRoot,
)
from tests.helpers.steps import FP32_ROWS, load, run, spec

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
    top_k: int = 1, scores: dict[str, Any] | None = None, outputs: dict[str, str] | None = None, **fields: Any
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
                **fields,
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


def test_classify_softmax_turns_logits_into_probabilities(make_root: MakeRoot) -> None:
    logits = [[2.0, 1.0, -1.0], [1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]]
    p = load(make_root, classify_pipeline(softmax=True, top_k=2))
    out = run(p, scores=logits)
    assert out is not None
    assert out["label"] == [["setosa", "versicolor"], ["setosa", "versicolor"], ["setosa", "versicolor"]]
    e = np.exp(np.array(logits[0]) - 2.0)
    expected = [list(e[:2] / e.sum()), [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))], [1 / 3, 1 / 3]]
    np.testing.assert_allclose(out["probability"], expected, rtol=1e-6)  # no overflow at 1000


def test_classify_errors(make_root: MakeRoot) -> None:
    with pytest.raises(LoadError, match="top_k 4 exceeds the 3 labels"):
        load(make_root, classify_pipeline(top_k=4))
    with pytest.raises(LoadError, match="'softmax' must be true or false"):
        load(make_root, classify_pipeline(softmax="yes"))
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
        threshold_pipeline([-1], {"datatype": "BYTES", "shape": [-1]}, threshold=0.8, labels=["ham", "spam"]),
    )
    assert run(p, score=[0.2, 0.9]) == {"decision": ["ham", "spam"]}
    p = load(make_root, threshold_pipeline([-1, 2], {"datatype": "BOOL", "shape": [-1]}))
    assert run(p, score=[[0.9, 0.1], [0.3, 0.7]]) == {"decision": [False, True]}


def test_threshold_labels_must_be_two(make_root: MakeRoot) -> None:
    with pytest.raises(LoadError, match=r"labels must be a list of two: \[negative, positive\]"):
        load(make_root, threshold_pipeline([-1], {"datatype": "BYTES"}, labels=["a", "b", "c"]))
