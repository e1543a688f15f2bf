"""Checks of graph steps that the schema cannot express: ensemble weights for
every input, split weights for every branch (and no weight without one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kbuild.spec.fields import step_type

if TYPE_CHECKING:
    from kbuild.spec.checks import Checker


def check_graphs(self: Checker) -> None:
    for parts, step in self.all_steps():
        kind = step_type(step)
        if kind == "ensemble":
            inputs, weights = step.get("inputs"), step.get("weights")
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
