"""type: sklearn — a scikit-learn estimator saved with joblib (or pickle).

Fields: model, input, output, method (predict | predict_proba | transform |
decision_function; default predict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import joblib

from kbuild.runtime.contract.errors import ConfigError
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
    if ctx.threads is not None:
        _size_pools(estimator, ctx.threads)
    method = getattr(estimator, method_name, None)
    if not callable(method):
        raise ConfigError(f"{type(estimator).__name__} has no method {method_name!r}")

    def run(variables: Vars) -> Vars:
        return {target: as_array(method(variable(variables, source)))}

    return run


def _size_pools(estimator: Any, threads: int) -> None:
    """Hold the estimator to the process's cores: joblib workers (n_jobs of
    -1 means every core of the node) and the OpenMP and BLAS pools that
    scikit-learn's compiled estimators and NumPy use."""
    get_params = getattr(estimator, "get_params", None)
    params = get_params(deep=True) if callable(get_params) else {}
    wide = {
        key: threads
        for key, value in params.items()
        if key.split("__")[-1] == "n_jobs" and isinstance(value, int) and (value < 0 or value > threads)
    }
    if wide:
        estimator.set_params(**wide)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn requires it; a plain pickle may not have it
        return
    threadpool_limits(limits=threads)
