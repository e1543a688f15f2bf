"""Shared by the tests split from test_steps.py."""

from __future__ import annotations

from typing import Any

from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.tensors import decode_inputs
from tests.helpers.runtime import (
    MakeRoot,
)

FP32_ROWS = {"datatype": "FP32", "shape": [-1, 4]}


def spec(inputs: dict[str, Any], outputs: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kbuild": 1, "name": "t", "inputs": inputs, "outputs": outputs, "steps": steps}


def load(make_root: MakeRoot, pipeline: dict[str, Any], **kwargs: Any) -> PipelineRunner:
    return PipelineRunner.load(make_root(pipeline, **kwargs) / "app")


def run(p: PipelineRunner, **inputs: Any) -> dict[str, Any] | None:
    out = p.run(decode_inputs(inputs, p.spec.inputs))
    return None if out is None else {k: v.tolist() for k, v in out.items()}
