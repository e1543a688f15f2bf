"""Rows routed to branches and put back in order: what switch and split share.

A call of N rows is split by a label per row; each branch runs once on its
rows (one batched call per branch), and the variables the branches set are
put back in the rows' original order. Every branch must set the same
variables with the same datatype and trailing shape.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from kbuild.runtime.contract.errors import DataError
from kbuild.runtime.steps import Runner
from kbuild.runtime.tensors import Array, Vars


def route(variables: Vars, labels: Sequence[Hashable], branches: Mapping[Hashable, Runner], where: str) -> Vars | None:
    """Run each branch on the rows labelled for it; the variables they set, in
    row order. None when a branch dropped its records (the caller's call is
    then answered one request at a time, so only the culprit is dropped)."""
    rows = len(labels)
    groups: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    if len(groups) == 1:  # every row goes one way: no copies
        [label] = groups
        return branches[label](variables)
    results: list[tuple[Hashable, np.ndarray, Vars]] = []
    for label, indexes in groups.items():
        take = np.asarray(indexes)
        subset = {name: arr[take] if arr.ndim and arr.shape[0] == rows else arr for name, arr in variables.items()}
        out = branches[label](subset)
        if out is None:
            return None
        results.append((label, take, out))
    return _merge(results, rows, where)


def _merge(results: list[tuple[Hashable, np.ndarray, Vars]], rows: int, where: str) -> Vars:
    first_label, _, first = results[0]
    merged: Vars = {}
    for name, arr in first.items():
        for label, _, out in results[1:]:
            other = out.get(name)
            if other is None:
                raise DataError(f"{where}: branch {label!r} did not set {name!r}, which branch {first_label!r} set")
            if other.shape[1:] != arr.shape[1:] or (
                other.dtype != arr.dtype and "O" not in (other.dtype.kind, arr.dtype.kind)
            ):
                raise DataError(
                    f"{where}: {name!r} is {other.dtype} {list(other.shape[1:])} from branch {label!r} "
                    f"but {arr.dtype} {list(arr.shape[1:])} from branch {first_label!r}; branches must agree"
                )
        dtype = object if any(out[name].dtype.kind in "OUS" for _, _, out in results) else arr.dtype
        column: Array = np.empty((rows, *arr.shape[1:]), dtype=dtype)
        for _, take, out in results:
            if out[name].shape[0] != len(take):
                raise DataError(f"{where}: {name!r} has {out[name].shape[0]} rows for the branch's {len(take)}")
            column[take] = out[name]
        merged[name] = column
    return merged


def row_values(arr: Array, where: str) -> list[object]:
    """One value per row of a selector ([N] or [N, 1])."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{where}: expected one value per row, [N] or [N, 1], got shape {list(arr.shape)}")
    values: list[object] = arr.tolist()
    return values
