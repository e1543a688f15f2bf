"""Graph steps through PipelineRunner.load / PipelineRunner.run on real artifact roots:
ensemble methods against NumPy, switch routing with the row order kept, split
stickiness by key (the same in another process), and the 4xx of a row that
matches no case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import RowError
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.steps.split import stable_point
from tests.helpers.runtime import REPO, MakeRoot


def labels(name: str, names: list[str], output: str = "label") -> dict[str, Any]:
    return {"name": name, "type": "classify", "input": "p", "labels": names, "outputs": {"label": output}}


def graph(*steps: dict[str, Any], outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kbuild": 1,
        "name": "g",
        "inputs": {
            "p": {"datatype": "FP32", "shape": [-1, 3]},
            "q": {"datatype": "FP32", "shape": [-1, 3]},
            "region": {"datatype": "BYTES", "shape": [-1]},
            "key": {"datatype": "BYTES", "shape": [-1]},
        },
        "outputs": outputs or {"label": {"datatype": "BYTES", "shape": [-1]}},
        "steps": list(steps),
    }


SCORES = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]], dtype=np.float32)


def run(pipeline: PipelineRunner, **given: Any) -> dict[str, Any]:
    rows = len(SCORES)
    inputs = {
        "p": SCORES,
        "q": SCORES[::-1].copy(),
        "region": np.array(["eu"] * rows, dtype=object),
        "key": np.array([f"k{i}" for i in range(rows)], dtype=object),
    }
    inputs.update(
        {
            k: v if isinstance(v, np.ndarray) else np.asarray(v, dtype=object if isinstance(v[0], str) else None)
            for k, v in given.items()
        }
    )
    out = pipeline.run(inputs)
    assert out is not None
    return {k: v.tolist() for k, v in out.items()}


SWITCH = {
    "name": "route",
    "type": "switch",
    "input": "region",
    "cases": {"eu": [labels("eu", ["a", "b", "c"])], "us": [labels("us", ["A", "B", "C"])]},
    "default": [labels("other", ["x", "y", "z"])],
}


def test_switch_routes_each_row_and_keeps_their_order(make_root: MakeRoot) -> None:
    pipeline = PipelineRunner.load(make_root(graph(SWITCH)) / "app")
    out = run(pipeline, region=["us", "eu", "mars", "us"])
    assert out["label"] == ["A", "b", "z", "A"]
    assert run(pipeline, region=["eu"] * 4)["label"] == ["a", "b", "c", "a"]  # one branch: no copies


def test_a_row_with_no_case_and_no_default_is_the_clients_fault(make_root: MakeRoot) -> None:
    switch = {**SWITCH, "default": None}
    del switch["default"]
    pipeline = PipelineRunner.load(make_root(graph(switch)) / "app")
    with pytest.raises(RowError) as refused:
        run(pipeline, region=["eu", "mars", "us", "eu"])
    assert refused.value.http_status == 400
    assert refused.value.message == "step 'route' (switch): no case for region = 'mars' (cases: eu, us)"
    # binary tensors carry text as bytes: the same words
    with pytest.raises(RowError) as as_bytes:
        run(pipeline, region=np.array([b"eu", b"mars", b"us", b"eu"], dtype=object))
    assert as_bytes.value.message == refused.value.message


@pytest.mark.parametrize(
    "selector, values, expected",
    [
        ("INT64", [1, 0, 1, 2], ["one", "zero", "one", "other"]),
        ("BOOL", [True, False, False, True], ["one", "zero", "zero", "one"]),
    ],
)
def test_integer_and_boolean_selectors(
    make_root: MakeRoot, selector: str, values: list[Any], expected: list[str]
) -> None:
    zero, one = ("0", "1") if selector == "INT64" else ("false", "true")
    switch = {
        "name": "route",
        "type": "switch",
        "input": "s",
        "cases": {one: [labels("one", ["one"] * 3)], zero: [labels("zero", ["zero"] * 3)]},
        "default": [labels("other", ["other"] * 3)],
    }
    spec = graph(switch)
    spec["inputs"]["s"] = {"datatype": selector, "shape": [-1]}
    pipeline = PipelineRunner.load(make_root(spec) / "app")
    dtype = np.int64 if selector == "INT64" else np.bool_
    assert run(pipeline, s=np.array(values, dtype=dtype))["label"] == expected


@pytest.mark.parametrize("method", ["mean", "weighted_mean", "max", "min", "concat"])
def test_ensemble_methods_match_numpy(make_root: MakeRoot, method: str) -> None:
    step: dict[str, Any] = {"name": "e", "type": "ensemble", "inputs": ["p", "q"], "method": method, "output": "o"}
    if method == "weighted_mean":
        step["weights"] = [3, 1]
    width = 6 if method == "concat" else 3
    pipeline = PipelineRunner.load(
        make_root(graph(step, outputs={"o": {"datatype": "FP32", "shape": [-1, width]}})) / "app"
    )
    p, q = SCORES, SCORES[::-1]
    expected = {
        "mean": (p + q) / 2,
        "weighted_mean": 0.75 * p + 0.25 * q,
        "max": np.maximum(p, q),
        "min": np.minimum(p, q),
        "concat": np.concatenate([p, q], axis=1),
    }[method]
    np.testing.assert_allclose(run(pipeline)["o"], expected, rtol=1e-6)


def test_vote_is_the_majority_and_ties_go_to_the_first(make_root: MakeRoot) -> None:
    votes = [
        labels(f"v{i}", names, f"l{i}") for i, names in enumerate([["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"]])
    ]
    step = {"name": "e", "type": "ensemble", "inputs": ["l0", "l1", "l2"], "method": "vote", "output": "label"}
    pipeline = PipelineRunner.load(make_root(graph(*votes, step)) / "app")
    # row 0: a, b, c (a tie: the first); row 1: b, a, b -> b
    assert run(pipeline)["label"][:2] == ["a", "b"]


SPLIT = {
    "name": "canary",
    "type": "split",
    "key": "key",
    "weights": {"stable": 1, "canary": 1},
    "branch_output": "variant",
    "branches": {"stable": [labels("s", ["a", "b", "c"])], "canary": [labels("c", ["A", "B", "C"])]},
}
SPLIT_OUT = {"label": {"datatype": "BYTES", "shape": [-1]}, "variant": {"datatype": "BYTES", "shape": [-1]}}


def test_split_by_key_is_sticky_and_names_the_branch(make_root: MakeRoot) -> None:
    root = make_root(graph(SPLIT, outputs=SPLIT_OUT))
    keys = [f"customer-{i}" for i in range(4)]
    first = run(PipelineRunner.load(root / "app"), key=keys)
    second = run(PipelineRunner.load(root / "app"), key=keys[::-1])
    assert first["variant"] == second["variant"][::-1]
    for label, variant in zip(first["label"], first["variant"], strict=True):
        assert label.isupper() == (variant == "canary")
    # branches take their share of [0, 1) in name order: canary [0, 0.5), stable [0.5, 1)
    assert [("canary" if stable_point(k) < 0.5 else "stable") for k in keys] == first["variant"]


def test_split_keys_land_the_same_way_in_another_process(make_root: MakeRoot) -> None:
    keys = [f"user{i}" for i in range(50)]
    code = "import json, sys; from kbuild.runtime.steps.split import stable_point; print(json.dumps([stable_point(k) for k in sys.argv[1:]]))"
    other = subprocess.run(
        [sys.executable, "-c", code, *keys],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert json.loads(other.stdout) == [stable_point(k) for k in keys]


def test_split_weights_share_the_rows(make_root: MakeRoot) -> None:
    split = {**SPLIT, "weights": {"stable": 9, "canary": 1}}
    root = make_root(graph(split, outputs=SPLIT_OUT))
    pipeline = PipelineRunner.load(root / "app")
    rows = 2000
    out = pipeline.run(
        {
            "p": np.tile(SCORES[:1], (rows, 1)),
            "q": np.tile(SCORES[:1], (rows, 1)),
            "region": np.array(["eu"] * rows, dtype=object),
            "key": np.array([f"k{i}" for i in range(rows)], dtype=object),
        }
    )
    assert out is not None
    share = float(np.mean(out["variant"] == "canary"))
    assert 0.07 < share < 0.13


def test_a_model_inside_a_branch_takes_a_hot_update(
    make_root: MakeRoot, models: dict[str, Path], iris: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    branch = [
        {
            "name": "eu-model",
            "type": "onnx",
            "inputs": {"X": "features"},
            "outputs": {"probabilities": "p"},
            "options": {"providers": ["CPUExecutionProvider"]},
        },
        labels("eu-labels", ["a", "b", "c"]),
    ]
    switch = {
        "name": "route",
        "type": "switch",
        "input": "region",
        "cases": {"eu": branch},
        "default": [
            {"name": "fixed", "type": "ensemble", "inputs": ["q", "q"], "method": "max", "output": "p"},
            labels("other-labels", ["x", "y", "z"]),
        ],
    }
    spec = graph(switch)
    spec["inputs"]["features"] = {"datatype": "FP32", "shape": [-1, 4]}
    root = make_root(spec)
    (root / "app" / "models" / "eu-model").mkdir(parents=True)
    (root / "app" / "models" / "eu-model" / "iris.onnx").write_bytes(models["onnx"].read_bytes())
    document = json.loads((root / "app" / "pipeline.json").read_text())
    document["steps"][0]["cases"]["eu"][0]["model"] = "models/eu-model/iris.onnx"
    (root / "app" / "pipeline.json").write_text(json.dumps(document))
    x, y = iris
    shifted = LogisticRegression(max_iter=1000).fit(x, (y + 1) % 3)  # a model that answers otherwise
    update = tmp_path / "update" / "shifted.onnx"
    update.parent.mkdir()
    update.write_bytes(
        to_onnx(shifted, x[:1], options={id(shifted): {"zipmap": False}}, target_opset=17).SerializeToString()
    )

    rows = {"features": x[[0, 60, 120, 1]], "region": ["eu", "eu", "mars", "eu"]}
    before = run(PipelineRunner.load(root / "app"), **rows)
    after = run(PipelineRunner.load(root / "app").with_model("eu-model", update), **rows)
    assert before["label"] == ["a", "b", "y", "a"]
    assert after["label"] == ["b", "c", "y", "b"]  # the new model's classes, the other branch untouched
