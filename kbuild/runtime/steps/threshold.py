"""type: threshold — scores -> booleans, or labels.

Fields: input, output, threshold (default 0.5), labels ([negative, positive],
optional: BYTES instead of BOOL). A score at or above the threshold is positive.
Element-wise, except that [N, 2] scores (a binary classifier's class
probabilities, as predict_proba gives them) are decided on column 1, the
positive class, giving [N].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_number, get_str, variable
from kbuild.runtime.tensors import Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    target = get_str(step, "output")
    threshold = get_number(step, "threshold", 0.5)
    raw_labels = step.get("labels")
    if raw_labels is not None and (not isinstance(raw_labels, list) or len(raw_labels) != 2):
        raise ConfigError("labels must be a list of two: [negative, positive]")
    negative, positive = (str(raw_labels[0]), str(raw_labels[1])) if raw_labels else ("", "")

    def run(variables: Vars) -> Vars:
        x = variable(variables, source)
        if x.dtype.kind not in "biuf":
            raise DataError(f"variable {source!r} is {x.dtype}, expected numbers")
        if x.ndim == 2 and x.shape[1] == 2:
            x = x[:, 1]
        decided = x >= threshold
        if raw_labels is None:
            return {target: decided}
        out = np.full(decided.shape, negative, dtype=object)
        out[decided] = positive
        return {target: out}

    return run
