"""Checks of graph steps that the schema cannot express: ensemble weights for
every input, split weights for every branch (and no weight without one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kbuild.spec.fields import step_type

if TYPE_CHECKING:
    from kbuild.spec.checks import Checker


def _declared_alike(self: Checker, parts: tuple[str | int, ...], step: Mapping[str, object]) -> None:
    """Ensemble inputs that are declared pipeline inputs must agree on their
    datatype and shape (the last axis aside, for concat); other variables are
    checked when the pipeline runs."""
    declared = self.data.get("inputs")
    inputs = step.get("inputs")
    if not isinstance(declared, Mapping) or not isinstance(inputs, list):
        return
    known = [(i, name, declared[name]) for i, name in enumerate(inputs)
             if isinstance(name, str) and isinstance(declared.get(name), Mapping)]  # fmt: skip
    if len(known) < 2:
        return
    _, first_name, first = known[0]
    concat = step.get("method") == "concat"
    for i, name, tensor in known[1:]:
        shape, first_shape = tensor.get("shape"), first.get("shape")
        if concat and isinstance(shape, list) and isinstance(first_shape, list):
            shape, first_shape = shape[:-1], first_shape[:-1]
        if tensor.get("datatype") != first.get("datatype") or shape != first_shape:
            self.add(parts + ("inputs", i), f"input {name!r} is {tensor.get('datatype')} {tensor.get('shape')} but "
                     f"{first_name!r} is {first.get('datatype')} {first.get('shape')}; an ensemble combines "
                     f"variables of one datatype and shape{' (but the last axis)' if concat else ''}")


def check_graphs(self: Checker) -> None:
    for parts, step in self.all_steps():
        kind = step_type(step)
        if kind == "ensemble":
            inputs, weights = step.get("inputs"), step.get("weights")
            _declared_alike(self, parts, step)
            if isinstance(inputs, list) and isinstance(weights, list) and len(inputs) != len(weights):
                self.add(parts + ("weights",), f"{len(weights)} weights for {len(inputs)} inputs; give one weight per input")
            if step.get("method") != "weighted_mean" and "weights" in step:
                self.add(parts + ("weights",), "weights apply to method weighted_mean only", at_key=True)
        elif kind == "split":
            weights, branches = step.get("weights"), step.get("branches")
            if isinstance(weights, Mapping) and isinstance(branches, Mapping):
                for name in branches:
                    if name not in weights:
                        self.add(parts + ("branches", name), f"branch {name!r} has no weight in weights", at_key=True)
                for name in weights:
                    if name not in branches:
                        self.add(parts + ("weights", name), f"weight for {name!r}, which is not a branch", at_key=True)
