"""type: ensemble — several variables of one shape -> one.

Fields: inputs (two or more variables), method (mean, weighted_mean, max, min,
vote, concat), weights (weighted_mean: one per input, normalised by their
sum), output. Float inputs combine in the widest of their datatypes; vote
takes labels or class indices ([N]), the majority per row, ties to the first
input's choice; concat joins along the last axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_choice, get_str, variable
from kbuild.runtime.tensors import Array, Vars

METHODS = ("mean", "weighted_mean", "max", "min", "vote", "concat")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    inputs = step.get("inputs")
    if not isinstance(inputs, list) or len(inputs) < 2 or not all(isinstance(v, str) for v in inputs):
        raise ConfigError("field 'inputs' must be a list of two or more variables")
    method = get_choice(step, "method", METHODS, "mean")
    target = get_str(step, "output")
    weights = None
    if method == "weighted_mean":
        raw = step.get("weights")
        if (
            not isinstance(raw, list)
            or len(raw) != len(inputs)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in raw)
            or sum(raw) <= 0
        ):
            raise ConfigError("weighted_mean needs 'weights': one number >= 0 per input, not all 0")
        weights = np.asarray(raw, dtype=np.float64) / float(sum(raw))

    def run(variables: Vars) -> Vars:
        arrays = [variable(variables, name) for name in inputs]
        return {target: combine(arrays, method, weights)}

    return run


def combine(arrays: list[Array], method: str, weights: np.ndarray | None) -> Array:
    if method == "concat":
        if len({a.shape[:-1] for a in arrays}) != 1:
            raise DataError(f"concat needs equal shapes but the last axis, got {[list(a.shape) for a in arrays]}")
        return np.concatenate(arrays, axis=-1)
    if len({a.shape for a in arrays}) != 1:
        raise DataError(f"{method} needs inputs of one shape, got {[list(a.shape) for a in arrays]}")
    if method == "vote":
        return _vote(arrays)
    if any(a.dtype.kind not in "iuf" for a in arrays):
        raise DataError(f"{method} needs numbers, got {[str(a.dtype) for a in arrays]}")
    dtype = np.result_type(*arrays, np.float32) if method in ("mean", "weighted_mean") else np.result_type(*arrays)
    stacked = np.stack([a.astype(dtype, copy=False) for a in arrays])
    if method == "mean":
        return np.asarray(stacked.mean(axis=0), dtype=dtype)
    if method == "weighted_mean":
        assert weights is not None
        return np.asarray(np.tensordot(weights, stacked, axes=1), dtype=dtype)
    return np.asarray(stacked.max(axis=0) if method == "max" else stacked.min(axis=0))


def _vote(arrays: list[Array]) -> Array:
    """The most frequent choice per row; a tie goes to the earliest input's."""
    if arrays[0].ndim != 1:
        raise DataError(f"vote takes one label or class index per row, [N], got {list(arrays[0].shape)}")
    out = np.empty(arrays[0].shape[0], dtype=object if any(a.dtype.kind in "OUS" for a in arrays) else arrays[0].dtype)
    for row, choices in enumerate(zip(*(a.tolist() for a in arrays), strict=True)):
        counts: dict[object, int] = {}
        for choice in choices:
            counts[choice] = counts.get(choice, 0) + 1
        best = max(counts.values())
        out[row] = next(c for c in choices if counts[c] == best)
    return out
