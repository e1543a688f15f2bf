"""type: xgboost — an XGBoost booster saved with save_model (.json or .ubj).

Fields: model, input ([N, F] numbers), output, method (predict | predict_proba;
default predict). predict gives class indices [N] (int64) for classification
objectives and the predicted values for the others; predict_proba gives class
probabilities [N, C] and needs a probabilistic objective (binary:logistic,
multi:softprob). Backend option from the spin: device (cpu, cuda).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xgboost as xgb

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import (
    Runner,
    StepContext,
    classifier_answer,
    get_choice,
    get_str,
    variable,
)
from kbuild.runtime.tensors import Array, Vars

METHODS = ("predict", "predict_proba")
_PROBABILISTIC = ("binary:logistic", "multi:softprob")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    method = get_choice(step, "method", METHODS, "predict")
    source = get_str(step, "input")
    target = get_str(step, "output")
    path = ctx.model_path(step)
    if path.suffix.lower() not in (".json", ".ubj"):
        # XGBoost reads the format from the suffix; anything else is the
        # deprecated binary format, which newer versions refuse.
        raise ConfigError(f"model {path.name!r}: expected a .json or .ubj booster (Booster.save_model)")
    booster = xgb.Booster()
    booster.load_model(str(path))
    device = str(ctx.options.get("device") or "cpu")
    booster.set_param({"device": device})
    if ctx.threads is not None:  # else OpenMP's default: every core of the node, not the container's share
        booster.set_param({"nthread": ctx.threads})
    objective = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    if method == "predict_proba" and objective not in _PROBABILISTIC:
        raise ConfigError(
            f"objective {objective} gives no class probabilities; use method predict "
            f"(predict_proba needs one of {', '.join(_PROBABILISTIC)})"
        )
    features = booster.num_features()

    def raw(x: Array) -> Array:
        if device == "cpu":
            return np.asarray(booster.inplace_predict(x))
        # inplace_predict warns on every call when the data and the booster
        # sit on different devices; a DMatrix is copied over quietly.
        return np.asarray(booster.predict(xgb.DMatrix(x)))

    def run(variables: Vars) -> Vars:
        x = variable(variables, source)
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            raise DataError(f"expected numbers [N, {features}], got {x.dtype} of shape {list(x.shape)}")
        if x.shape[1] != features:
            raise DataError(f"the booster takes {features} features, got {x.shape[1]}")
        return {target: _answer(raw(x), objective, method)}

    return run


def _answer(prediction: Array, objective: str, method: str) -> Array:
    if objective in _PROBABILISTIC:
        return classifier_answer(prediction, method, binary=objective == "binary:logistic")
    if objective == "binary:logitraw":  # margins: positive means class 1
        return (prediction.reshape(-1) > 0).astype(np.int64)
    if objective in ("binary:hinge", "multi:softmax"):  # classes, as floats
        return prediction.reshape(-1).astype(np.int64)
    return prediction
