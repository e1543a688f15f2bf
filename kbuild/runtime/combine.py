"""Requests combined into one pipeline call: stacked along the first
dimension, run once, split back.

The rule and the two halves are shared by HTTP/gRPC batching
(kbuild.runtime.batching) and Kafka micro-batches
(kbuild.runtime.streaming.microbatch): a pipeline can combine requests when
every input and output has a variable first dimension, and a combined call's
answer can be split only when every output kept that dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.tensors import Array, Vars


def batch_problem(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """Why requests of this pipeline cannot be concatenated, or None: every
    input and output needs a variable first dimension to concatenate along."""
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if spec.shape is None or not spec.shape or spec.shape[0] != -1:
                return f"{kind} '{spec.name}' has no variable first dimension"
    return None


def stack_rows(parts: Sequence[Vars]) -> Vars:
    """The inputs of several requests (same names, same trailing shapes) as one."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def has_rows(outputs: Vars, total: int) -> bool:
    """Whether every output kept the combined call's `total` rows."""
    return all(arr.ndim > 0 and arr.shape[0] == total for arr in outputs.values())


def split_rows(outputs: Vars, sizes: Sequence[int]) -> list[Vars] | None:
    """The outputs of a combined call, one part per request of `sizes` rows;
    None when an output lost the batch dimension."""
    if not has_rows(outputs, sum(sizes)):
        return None
    parts: list[Vars] = []
    start = 0
    for n in sizes:
        end = start + n
        parts.append({name: arr[start:end] for name, arr in outputs.items()})
        start = end
    return parts


def per_request(arr: Array, count: int) -> Array:
    """An output of `count` requests of equal rows with the requests as its
    first axis (a view: no copy), for encoders that loop in C."""
    return arr.reshape(count, arr.shape[0] // count, *arr.shape[1:])
