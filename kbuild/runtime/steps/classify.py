"""type: classify — scores -> labels (BYTES) and their probabilities (FP32).

Fields: input (scores [N, C], or class indices [N] of an integer type), labels
(C of them), top_k (default 1), outputs {label: VAR, probability: VAR, scores:
VAR} (any may be left out; scores is every class's score [N, C], FP32). top_k 1 gives [N] outputs, top_k k > 1 gives [N, k] sorted by
descending score (ties in label order). Scores are reported as given, unless
softmax: true, which turns logits (a transformer's output) into probabilities
first. Class indices get probability 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import (
    Runner,
    StepContext,
    get_int,
    get_mapping,
    get_str,
    variable,
)
from kbuild.runtime.tensors import Array, Vars

_OUTPUT_KEYS = ("label", "probability", "scores")


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    raw_labels = step.get("labels")
    if not isinstance(raw_labels, list) or not raw_labels:
        raise ConfigError("labels must be a non-empty list")
    labels = np.array([str(x) for x in raw_labels], dtype=object)
    top_k = get_int(step, "top_k", 1, 1)
    if top_k > len(labels):
        raise ConfigError(f"top_k {top_k} exceeds the {len(labels)} labels")
    outputs = get_mapping(step, "outputs")
    unknown = [k for k in outputs if k not in _OUTPUT_KEYS]
    if unknown:
        raise ConfigError(f"outputs: unknown key {unknown[0]!r} (use label, probability, scores)")
    softmax = step.get("softmax", False)
    if not isinstance(softmax, bool):
        raise ConfigError("field 'softmax' must be true or false")
    label_var = outputs.get("label")
    prob_var = outputs.get("probability")
    scores_var = outputs.get("scores")
    classes = len(labels)

    def run(variables: Vars) -> Vars:
        x = variable(variables, source)
        if x.ndim == 1 and x.dtype.kind in "iu":
            if top_k > 1:
                raise DataError("top_k > 1 needs scores [N, C], not class indices")
            if x.size and (x.min() < 0 or x.max() >= classes):
                raise DataError(f"class index out of range for {classes} labels")
            label = labels[x]
            prob: Array = np.ones(x.shape, dtype=np.float32)
            scores: Array = np.eye(classes, dtype=np.float32)[x]
        elif x.ndim == 2 and x.dtype.kind in "biuf" and not (softmax and x.dtype.kind != "f"):
            if x.shape[1] != classes:
                raise DataError(f"scores have {x.shape[1]} columns, there are {classes} labels")
            if softmax:
                x = _softmax(x)
            scores = x.astype(np.float32)
            if top_k == 1:
                idx = np.argmax(x, axis=1)
                label = labels[idx]
                prob = x[np.arange(x.shape[0]), idx].astype(np.float32)
            else:
                order = np.argsort(-x.astype(np.float64), axis=1, kind="stable")[:, :top_k]
                label = labels[order]
                prob = np.take_along_axis(x, order, axis=1).astype(np.float32)
        else:
            raise DataError(
                f"expected scores [N, {classes}] or integer class indices [N], got {x.dtype} of shape {list(x.shape)}"
            )
        out: Vars = {}
        if label_var:
            out[label_var] = label
        if prob_var:
            out[prob_var] = prob
        if scores_var:
            out[scores_var] = scores
        return out

    return run


def _softmax(logits: Array) -> Array:
    """Probabilities from logits, in the logits' float type (FP64 stays FP64):
    shifted by the row's maximum so that no exp overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    result: Array = e / e.sum(axis=1, keepdims=True)
    return result
