"""Checks of graph steps that the schema cannot express: ensemble weights for
every input, split weights for every branch (and no weight without one), and
branches of a switch or split that set one variable as different tensors.

A branch's answers are joined row by row after the branches ran, so each
variable must have one datatype and shape whichever branch set it. The types
are known where a step's kind fixes them (classify, threshold, scale, fields,
image, tokenize); what a model or user code gives is checked when it runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbuild.load.step_fields import step_type
from kbuild.runtime.contract.step_types import branches_of

if TYPE_CHECKING:
    from kbuild.load.checks import Checker

Parts = tuple[str | int, ...]


def _declared_alike(checker: Checker, parts: Parts, step: Mapping[str, object]) -> None:
    """Ensemble inputs that are declared pipeline inputs must agree on their
    datatype and shape (the last axis aside, for concat); other variables are
    checked when the pipeline runs."""
    declared = checker.data.get("inputs")
    inputs = step.get("inputs")
    if not isinstance(declared, Mapping) or not isinstance(inputs, list):
        return
    known = [
        (i, name, declared[name])
        for i, name in enumerate(inputs)
        if isinstance(name, str) and isinstance(declared.get(name), Mapping)
    ]
    if len(known) < 2:
        return
    _, first_name, first = known[0]
    concat = step.get("method") == "concat"
    for i, name, tensor in known[1:]:
        shape, first_shape = tensor.get("shape"), first.get("shape")
        if concat and isinstance(shape, list) and isinstance(first_shape, list):
            shape, first_shape = shape[:-1], first_shape[:-1]
        if tensor.get("datatype") != first.get("datatype") or shape != first_shape:
            checker.add(
                parts + ("inputs", i),
                f"input {name!r} is {tensor.get('datatype')} {tensor.get('shape')} but "
                f"{first_name!r} is {first.get('datatype')} {first.get('shape')}; an ensemble combines "
                f"variables of one datatype and shape{' (but the last axis)' if concat else ''}",
            )


Tensor = tuple[str, list[int] | None]  # datatype, shape where the step fixes it


def _known_outputs(step: Mapping[str, Any]) -> dict[str, tuple[Tensor, tuple[str, ...]]]:
    """The variables a step sets whose tensor its kind fixes: name -> (tensor, field of the step)."""
    kind = step_type(step)
    given = step.get("outputs")
    outputs: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    output = step.get("output")
    found: dict[str, tuple[Tensor, tuple[str, ...]]] = {}
    if kind == "classify":
        k = step.get("top_k", 1)
        shape = [-1] if k == 1 else [-1, k] if isinstance(k, int) else None
        labels = step.get("labels")
        fixed = {"label": ("BYTES", shape), "probability": ("FP32", shape)}
        fixed["scores"] = ("FP32", [-1, len(labels)] if isinstance(labels, list) else None)
        for key, tensor_of in fixed.items():
            if isinstance(outputs.get(key), str):
                found[outputs[key]] = (tensor_of, ("outputs", key))
    elif kind == "tokenize":
        datatype = str(step.get("datatype", "INT64"))
        for key, name in outputs.items():
            if isinstance(name, str):
                found[name] = ((datatype, None), ("outputs", str(key)))
    elif isinstance(output, str) and kind in ("threshold", "scale", "fields", "image", "pool"):
        if kind == "threshold":
            tensor: Tensor = ("BYTES" if step.get("labels") else "BOOL", None)
        elif kind in ("scale", "pool"):
            tensor = ("FP32", None)
        elif kind == "fields":
            columns = step.get("fields")
            tensor = (str(step.get("datatype", "FP32")), [-1, len(columns)] if isinstance(columns, list) else None)
        else:
            size, channels = step.get("size"), step.get("channels", 3)
            tensor = ("FP32", None)
            if isinstance(size, list) and len(size) == 2 and isinstance(channels, int):
                nhwc = step.get("layout") == "NHWC"
                tensor = ("FP32", [-1, *size, channels] if nhwc else [-1, channels, *size])
        found[output] = (tensor, ("output",))
    return found


def _label(where: tuple[str, ...]) -> str:
    """How a message names a branch: case 'eu', branch 'canary', the default."""
    if where == ("default",):
        return "the default"
    return f"{'case' if where[0] == 'cases' else 'branch'} {where[-1]!r}"


def _branches_alike(checker: Checker, parts: Parts, step: Mapping[str, Any]) -> None:
    first: dict[str, tuple[Tensor, str]] = {}
    for where, steps in branches_of(dict(step)):
        label = _label(where)
        last: dict[str, tuple[Tensor | None, Parts]] = {}
        for i, inner in enumerate(steps):
            if not isinstance(inner, Mapping):
                continue
            known = _known_outputs(inner)
            for name in _set_by(inner):
                tensor, field = known.get(name, (None, ()))
                last[name] = (tensor, parts + where + (i, *field))
        for name, (tensor, at) in last.items():
            if tensor is None:
                continue
            if name not in first:
                first[name] = (tensor, label)
                continue
            (datatype, shape), other = first[name]
            if tensor[0] != datatype or (shape is not None and tensor[1] is not None and tensor[1] != shape):
                checker.add(
                    at,
                    f"{label} sets {name!r} as {_show(tensor)} but {other} sets it as "
                    f"{_show((datatype, shape))}; the branches' answers are joined row by row, so every "
                    f"branch must give {name!r} one datatype and shape",
                )


def _set_by(step: Mapping[str, Any]) -> list[str]:
    outputs, output = step.get("outputs"), step.get("output")
    names = (
        list(outputs.values()) if isinstance(outputs, Mapping) else list(outputs) if isinstance(outputs, list) else []
    )
    names += [output] if output is not None else []
    return [n for n in names if isinstance(n, str)]


def _show(tensor: Tensor) -> str:
    return tensor[0] if tensor[1] is None else f"{tensor[0]} {tensor[1]}"


def check_graphs(checker: Checker) -> None:
    for parts, step in checker.all_steps():
        kind = step_type(step)
        if kind in ("switch", "split"):
            _branches_alike(checker, parts, step)
        if kind == "ensemble":
            inputs, weights = step.get("inputs"), step.get("weights")
            _declared_alike(checker, parts, step)
            if isinstance(inputs, list) and isinstance(weights, list) and len(inputs) != len(weights):
                checker.add(
                    parts + ("weights",), f"{len(weights)} weights for {len(inputs)} inputs; give one weight per input"
                )
            if step.get("method") != "weighted_mean" and "weights" in step:
                checker.add(parts + ("weights",), "weights apply to method weighted_mean only", at_key=True)
        elif kind == "split":
            weights, branches = step.get("weights"), step.get("branches")
            if isinstance(weights, Mapping) and isinstance(branches, Mapping):
                for name in branches:
                    if name not in weights:
                        checker.add(
                            parts + ("branches", name), f"branch {name!r} has no weight in weights", at_key=True
                        )
                for name in weights:
                    if name not in branches:
                        checker.add(
                            parts + ("weights", name), f"weight for {name!r}, which is not a branch", at_key=True
                        )
