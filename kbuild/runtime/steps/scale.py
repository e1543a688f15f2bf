"""type: scale — (x - mean) / std as float32.

Fields: input, output, mean, std: numbers, or lists with one value per feature
(the last axis of the input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_str, variable
from kbuild.runtime.tensors import Array, Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    target = get_str(step, "output")
    mean = _param(step, "mean", 0.0)
    std = _param(step, "std", 1.0)
    if (std == 0).any():
        raise ConfigError("std must not contain 0")
    if mean.ndim and std.ndim and mean.shape != std.shape:
        raise ConfigError(f"mean has {mean.shape[0]} values, std has {std.shape[0]}")
    features = max(mean.size if mean.ndim else 0, std.size if std.ndim else 0)

    def run(variables: Vars) -> Vars:
        x = variable(variables, source)
        if x.dtype.kind not in "biuf":
            raise DataError(f"variable {source!r} is {x.dtype}, expected numbers")
        if features and (x.ndim == 0 or x.shape[-1] != features):
            raise DataError(
                f"variable {source!r} has shape {list(x.shape)}; mean/std have {features} values for its last axis"
            )
        return {target: (x.astype(np.float32, copy=False) - mean) / std}

    return run


def _param(step: Mapping[str, Any], key: str, default: float) -> Array:
    value = step.get(key, default)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        raise ConfigError(f"{key} must be a number or a non-empty list of numbers")
    return np.asarray(value, dtype=np.float32)
