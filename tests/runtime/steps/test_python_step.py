"""Each step type, through Pipeline.load / Pipeline.run on real artifact roots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError, StepError
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import (
    MakeRoot,
)
from tests.helpers.steps import load, run, spec

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
    p = load(make_root, python_pipeline(function="rtpkg_a.mod:make", code="src"), code={"custom": code})
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
def test_python_step_load_errors(make_root: MakeRoot, function: str, source: str, message: str) -> None:
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
