"""type: pool — token vectors -> one vector per row, as sentence-transformers'
Pooling and Normalize modules compute it.

Fields: input (FP32 [N, T, D], a transformer's last hidden state), mask (the
attention mask [N, T]: 1 for a token, 0 for padding; without it every token
counts), method (mean, the default; cls; max; mean_sqrt_len; last), normalize
(default false: scale each vector to length 1), output (FP32 [N, D]).

Padding never counts: mean and mean_sqrt_len sum the kept tokens only, max
takes the largest of the kept tokens, last takes the last kept token (so left
and right padding give the same vector). A row with no kept token gives zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_choice, get_str, variable
from kbuild.runtime.tensors import Array, Vars

METHODS = ("mean", "cls", "max", "mean_sqrt_len", "last")
# the smallest norm and count divided by, as torch's F.normalize and
# sentence-transformers' Pooling clamp them
_NORM_EPS = 1e-12
_COUNT_EPS = 1e-9


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    source = get_str(step, "input")
    mask_var = get_str(step, "mask") if "mask" in step else None
    method = get_choice(step, "method", METHODS, "mean")
    normalize = step.get("normalize", False)
    if not isinstance(normalize, bool):
        raise ConfigError("field 'normalize' must be true or false")
    target = get_str(step, "output")

    def run(variables: Vars) -> Vars:
        hidden = variable(variables, source)
        if hidden.ndim != 3 or hidden.dtype.kind != "f":
            raise DataError(f"expected token vectors, floats [N, tokens, D], got {hidden.dtype} {list(hidden.shape)}")
        hidden = hidden.astype(np.float32, copy=False)
        if mask_var is None:
            mask = np.ones(hidden.shape[:2], dtype=np.float32)
        else:
            raw = variable(variables, mask_var)
            if raw.shape != hidden.shape[:2]:
                raise DataError(f"mask has shape {list(raw.shape)}, the token vectors {list(hidden.shape[:2])}")
            mask = (raw != 0).astype(np.float32)
        return {target: embeddings(hidden, mask, method, normalize)}

    return run


def embeddings(hidden: Array, mask: Array, method: str, normalize: bool) -> Array:
    """hidden [N, T, D] float32, mask [N, T] of 0.0 and 1.0 -> float32 [N, D],
    of length 1 where normalize asks (the converters prove this very code)."""
    pooled = pool(hidden, mask, method)
    if normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _NORM_EPS)
    return pooled.astype(np.float32, copy=False)


def pool(hidden: Array, mask: Array, method: str) -> Array:
    """hidden [N, T, D] float32, mask [N, T] of 0.0 and 1.0 -> [N, D]."""
    if method == "cls":
        return np.ascontiguousarray(hidden[:, 0, :])
    if method == "last":
        tokens = hidden.shape[1]
        kept: Array = mask.sum(axis=1) > 0
        last = tokens - 1 - np.argmax(mask[:, ::-1], axis=1)
        picked = hidden[np.arange(hidden.shape[0]), last]
        return np.where(kept[:, None], picked, 0.0).astype(np.float32)
    if method == "max":
        masked = np.where(mask[:, :, None] > 0, hidden, np.float32(-1e9))
        any_kept: Array = mask.sum(axis=1) > 0
        return np.where(any_kept[:, None], masked.max(axis=1), 0.0).astype(np.float32)
    # one matrix product per row sums the kept tokens
    summed = np.einsum("ntd,nt->nd", hidden, mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), _COUNT_EPS)
    divisor = counts if method == "mean" else np.sqrt(counts)  # mean_sqrt_len
    result: Array = summed / divisor
    return result
