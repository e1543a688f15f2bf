"""type: sklearn — a scikit-learn estimator saved with joblib (or pickle).

Fields: model, input, output, method (predict | predict_proba | transform |
decision_function; default predict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import joblib

from kbuild.runtime.errors import ConfigError
from kbuild.runtime.steps import Runner, StepContext, get_str, variable
from kbuild.runtime.tensors import Vars, as_array

METHODS = ("predict", "predict_proba", "transform", "decision_function")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    method_name = get_str(step, "method", "predict")
    if method_name not in METHODS:
        raise ConfigError(f"method {method_name!r} is not one of {', '.join(METHODS)}")
    source = get_str(step, "input")
    target = get_str(step, "output")
    # joblib.load also reads plain pickles, so .pkl files need no second path.
    estimator = joblib.load(ctx.model_path(step))
    method = getattr(estimator, method_name, None)
    if not callable(method):
        raise ConfigError(f"{type(estimator).__name__} has no method {method_name!r}")

    def run(variables: Vars) -> Vars:
        return {target: as_array(method(variable(variables, source)))}

    return run
