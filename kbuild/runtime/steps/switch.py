"""type: switch — each row to the branch of its selector's value.

Fields: input (the selector: BYTES, integers or BOOL, one value per row),
cases ({value: [steps]}), default ([steps], optional). A row whose value has
no case and no default is the client's fault (a 4xx naming the value); the
other requests of the same batch are answered.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from kbuild.runtime.contract.errors import ConfigError, RowError, short
from kbuild.runtime.routing import route, row_values
from kbuild.runtime.steps import Runner, StepContext, get_str, variable
from kbuild.runtime.tensors import Vars

_DEFAULT = ("default",)  # a label no case value can be


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    assert ctx.branch is not None
    source = get_str(step, "input")
    cases = step.get("cases")
    if not isinstance(cases, Mapping) or not cases:
        raise ConfigError("field 'cases' must be an object of value: [steps]")
    branches: dict[Hashable, Runner] = {str(value): ctx.branch(steps) for value, steps in cases.items()}
    if step.get("default") is not None:
        branches[_DEFAULT] = ctx.branch(step["default"])
    where = f"step '{ctx.name}'"

    def run(variables: Vars) -> Vars | None:
        labels: list[Hashable] = []
        for value in row_values(variable(variables, source), where):
            key = case_key(value)
            if key in branches:
                labels.append(key)
            elif _DEFAULT in branches:
                labels.append(_DEFAULT)
            else:
                # the key as the cases are written, whichever transport carried the text (JSON str, binary bytes)
                shown = repr(key) if isinstance(value, str | bytes) else key
                raise RowError(f"no case for {source} = {short(shown)} (cases: {', '.join(map(str, cases))})")
        return route(variables, labels, branches, where)

    return run


def case_key(value: object) -> str:
    """A selector value as the case keys are written: true/false, 3, eu."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"a selector value is not UTF-8 text: {short(repr(value))}") from None
    return str(value)
