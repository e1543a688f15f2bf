"""type: split — rows between branches by weight (A/B tests, canaries).

Fields: weights ({branch: weight}), branches ({branch: [steps]}), key (a
variable: rows with the same value always take the same branch, by a stable
hash: the same in every replica, process and restart), branch_output (a BYTES
variable naming the branch that answered each row). Without a key each row
draws its branch at random. Rows per branch are counted in
kbuild_split_rows_total{step, branch}.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ConfigError
from kbuild.runtime.metrics import step_counter
from kbuild.runtime.routing import route, row_values
from kbuild.runtime.steps import Runner, StepContext, variable
from kbuild.runtime.tensors import Vars

_SCALE = float(1 << 64)


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    assert ctx.branch is not None
    weights, branch_steps = step.get("weights"), step.get("branches")
    if not isinstance(weights, Mapping) or not isinstance(branch_steps, Mapping) or set(weights) != set(branch_steps):
        raise ConfigError("fields 'weights' and 'branches' must name the same branches")
    names: list[str] = sorted(str(n) for n in branch_steps)  # a fixed order: the same key lands the same way everywhere
    branches: dict[Hashable, Runner] = {name: ctx.branch(branch_steps[name]) for name in names}
    total = float(sum(weights[name] for name in names))
    bounds = list(np.cumsum([weights[name] / total for name in names]))
    key = step.get("key")
    marker = step.get("branch_output")
    counter = step_counter("kbuild_split_rows_total", "Rows a split step sent to each branch.", ("step", "branch"))
    where = f"step '{ctx.name}'"
    draw = random.Random()

    def pick(point: float) -> str:
        return names[min(bisect.bisect_right(bounds, point), len(names) - 1)]

    def run(variables: Vars) -> Vars | None:
        if isinstance(key, str):
            labels: list[Hashable] = [pick(stable_point(v)) for v in row_values(variable(variables, key), where)]
        else:
            rows = _rows(variables)
            labels = [pick(draw.random()) for _ in range(rows)]
        for label in labels:
            counter.inc((ctx.name, str(label)))
        out = route(variables, labels, branches, where)
        if out is not None and isinstance(marker, str):
            out[marker] = np.array(labels, dtype=object)
        return out

    return run


def stable_point(value: object) -> float:
    """A key value's place in [0, 1): the same for the same value in every process."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / _SCALE


def _rows(variables: Vars) -> int:
    for arr in variables.values():
        if arr.ndim:
            return int(arr.shape[0])
    return 1
