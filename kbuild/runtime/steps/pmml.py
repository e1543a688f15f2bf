"""type: pmml — a PMML document, evaluated by sklearn-pmml-model (no Java).

Fields: model; input VAR ([N, F], columns in the order of the document's
DataFields) or inputs {field: VAR} (each [N] or [N, 1], by field name); output
VAR; method (predict | predict_proba; default predict). predict gives the
target's values (text for a categorical target, as BYTES), predict_proba the
class probabilities [N, C] in the order of the target's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn_pmml_model.auto_detect import auto_detect_estimator

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import (
    Runner,
    StepContext,
    get_choice,
    get_str,
    io_map,
    variable,
)
from kbuild.runtime.tensors import Array, Vars, as_array

METHODS = ("predict", "predict_proba")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    method = get_choice(step, "method", METHODS, "predict")
    target = get_str(step, "output")
    estimator = auto_detect_estimator(pmml=str(ctx.model_path(step)))
    predict = getattr(estimator, method, None)
    if not callable(predict):
        raise ConfigError(f"{type(estimator).__name__} has no {method} (a regression model predicts values only)")
    fields = _fields(estimator)
    classes = getattr(estimator, "classes_", None)
    empty = (
        np.zeros((0, len(classes)), dtype=np.float64)
        if method == "predict_proba" and classes is not None
        else np.zeros((0,), dtype=object if classes is not None else np.float64)
    )
    if "input" in step:
        if "inputs" in step:
            raise ConfigError("give either 'inputs' or 'input', not both")
        source = get_str(step, "input")
        columns: dict[str, str] = {}
    else:
        source = ""
        columns = io_map(step, "inputs", "input", fields, "field")
        missing = [f for f in fields if f not in columns]
        if missing:
            raise ConfigError(f"field(s) {', '.join(missing)} of the PMML document not mapped in 'inputs'")

    def run(variables: Vars) -> Vars:
        x = variable(variables, source) if source else _table(variables, fields, columns)
        if x.ndim != 2 or x.shape[1] != len(fields):
            raise DataError(f"expected [N, {len(fields)}] for the fields {', '.join(fields)}, got {list(x.shape)}")
        if not len(x):  # scikit-learn refuses empty input
            return {target: empty}
        return {target: as_array(predict(x))}

    return run


def _fields(estimator: Any) -> list[str]:
    """The document's input fields, in the order its estimator reads columns."""
    target = estimator.target_field
    return [name for name, e in estimator.fields.items() if e is not target and e.tag == "DataField"]


def _table(variables: Vars, fields: list[str], columns: Mapping[str, str]) -> Array:
    data: list[Array] = []
    for field in fields:
        column = variable(variables, columns[field])
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise DataError(f"field {field!r}: expected [N] or [N, 1], got {list(column.shape)}")
        data.append(column)
    if len({c.shape[0] for c in data}) > 1:
        raise DataError(
            "the fields have different lengths: "
            + ", ".join(f"{f} {c.shape[0]}" for f, c in zip(fields, data, strict=True))
        )
    numeric = all(c.dtype.kind in "biuf" for c in data)
    # a categorical field keeps its text: the estimator maps it to categories
    return np.column_stack([c.astype(np.float64 if numeric else object) for c in data])
