"""type: fields — named variables (one value per record) -> one [N, F] tensor.

Fields: fields (variable names, in column order), output, datatype (default
FP32). Each field is [N], [N, 1] or a scalar (repeated for every row); this is
how JSON records such as {"sepal_length": 5.1, ...} become a model's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_str, variable
from kbuild.runtime.tensors import DTYPES, Array, Vars


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    names = step.get("fields")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("fields must be a non-empty list of variable names")
    target = get_str(step, "output")
    datatype = get_str(step, "datatype", "FP32")
    if datatype not in DTYPES:
        raise ConfigError(f"unknown datatype {datatype!r} (one of {', '.join(DTYPES)})")
    dtype = DTYPES[datatype]

    def run(variables: Vars) -> Vars:
        columns: list[Array] = []
        for name in names:
            col = variable(variables, name)
            if col.ndim == 2 and col.shape[1] == 1:
                col = col[:, 0]
            elif col.ndim > 1:
                raise DataError(f"field {name!r} has shape {list(col.shape)}, expected [N], [N, 1] or a scalar")
            columns.append(col)
        lengths = {c.shape[0] for c in columns if c.ndim == 1}
        if len(lengths) > 1:
            sizes = ", ".join(f"{n}: {c.shape[0]}" for n, c in zip(names, columns, strict=True) if c.ndim == 1)
            raise DataError(f"fields have different lengths ({sizes})")
        rows = lengths.pop() if lengths else 1
        out = np.empty((rows, len(names)), dtype=dtype)
        for j, (name, col) in enumerate(zip(names, columns, strict=True)):
            try:
                out[:, j] = col
            except (ValueError, TypeError) as e:
                raise DataError(f"field {name!r} cannot be converted to {datatype}: {e}") from None
        return {target: out}

    return run
