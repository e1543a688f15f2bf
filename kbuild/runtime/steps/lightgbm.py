"""type: lightgbm — a LightGBM booster saved as text (Booster.save_model, .txt).

Fields: model, input ([N, F] numbers), output, method (predict | predict_proba;
default predict). predict gives class indices [N] (int64) for the binary and
multiclass objectives and the predicted values for the others; predict_proba
gives class probabilities [N, C] and needs binary, multiclass or multiclassova.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import (
    Runner,
    StepContext,
    classifier_answer,
    get_choice,
    get_str,
    variable,
)
from kbuild.runtime.tensors import Vars

METHODS = ("predict", "predict_proba")
_PROBABILISTIC = ("binary", "multiclass", "multiclassova")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    method = get_choice(step, "method", METHODS, "predict")
    source = get_str(step, "input")
    target = get_str(step, "output")
    path = ctx.model_path(step)
    objective = _objective(path)
    booster = lgb.Booster(model_file=str(path))
    if method == "predict_proba" and objective not in _PROBABILISTIC:
        raise ConfigError(
            f"objective {objective or '(none recorded)'} gives no class probabilities; use method "
            f"predict (predict_proba needs one of {', '.join(_PROBABILISTIC)})"
        )
    features = booster.num_feature()
    per_row = booster.num_model_per_iteration()  # the number of classes of a multiclass model

    # else OpenMP's default: every core of the node, not the container's share
    pool: dict[str, Any] = {"num_threads": ctx.threads} if ctx.threads is not None else {}

    def run(variables: Vars) -> Vars:
        x = variable(variables, source)
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            raise DataError(f"expected numbers [N, {features}], got {x.dtype} of shape {list(x.shape)}")
        if x.shape[1] != features:
            raise DataError(f"the booster takes {features} features, got {x.shape[1]}")
        prediction = np.asarray(booster.predict(x, **pool))
        if not len(x) and per_row > 1:  # LightGBM flattens an empty [0, C]
            prediction = prediction.reshape(0, per_row)
        if objective in _PROBABILISTIC:
            prediction = classifier_answer(prediction, method, binary=objective == "binary")
        return {target: prediction}

    return run


def _objective(path: Path) -> str:
    """The objective's name from the model text's header, e.g. `objective=multiclass num_class:3`.

    Read from the file rather than from the loaded booster: Booster.params is
    empty for models saved by older versions, and dump_model() serializes every tree.
    """
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("objective="):
                    words = line.split("=", 1)[1].split()
                    return words[0] if words else ""
                if line.startswith("Tree="):  # past the header
                    break
    except OSError as e:
        raise ConfigError(f"cannot read the model: {e}") from None
    return ""
