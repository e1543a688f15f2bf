"""The contract between the pipeline and the step modules, and field helpers.

Each step type lives in kbuild.runtime.steps.<type> and exposes

    build(step: Mapping[str, Any], ctx: StepContext) -> Runner

where step is the step's object from pipeline.json. build() loads what the step
needs (raising ConfigError for fields that make no sense); the Runner takes the
variables and returns the ones it sets, or None to drop the record. This package
is shipped in every artifact, the type modules only when the pipeline uses them,
so this file must not import any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.tensors import Array, Vars

Runner = Callable[[Vars], Vars | None]


@dataclass(frozen=True)
class StepContext:
    name: str
    app_dir: Path
    # The spin's backend options for this step type (pipeline.json's
    # steps[i].options), e.g. {"providers": ["CPUExecutionProvider"]}.
    options: Mapping[str, Any] = field(default_factory=dict)
    # The cores this process may use (kbuild.runtime.threads): the size a model
    # runtime's thread pool is set to; None leaves the library's default.
    threads: int | None = None
    # For graph steps: builds a branch (a list of steps as pipeline.json holds
    # them) into a runner that returns the variables the branch set.
    branch: Callable[[Sequence[Mapping[str, Any]]], Runner] | None = None

    def path(self, relative: str, what: str = "file") -> Path:
        """A path from pipeline.json (relative to the app folder) that must
        exist and stay inside the app folder."""
        p = Path(relative)
        if p.is_absolute():
            raise ConfigError(f"{what} path {relative!r} must be relative to the app folder")
        full = (self.app_dir / p).resolve()
        if not full.is_relative_to(self.app_dir.resolve()):
            raise ConfigError(f"{what} path {relative!r} leaves the app folder")
        if not full.exists():
            raise ConfigError(f"{what} {relative!r} not found in {self.app_dir}")
        return full

    def model_path(self, step: Mapping[str, Any]) -> Path:
        return self.path(get_str(step, "model"), "model")


def get_str(step: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = step.get(key, default)
    if not isinstance(value, str) or not value:
        if key not in step and default is None:
            raise ConfigError(f"missing field {key!r}")
        raise ConfigError(f"field {key!r} must be a non-empty string")
    return value


def get_mapping(step: Mapping[str, Any], key: str) -> dict[str, str]:
    """A {tensor: variable} mapping."""
    value = step.get(key)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"field {key!r} must be a non-empty object of name: variable")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or not v:
            raise ConfigError(f"field {key!r}: {k!r} must map to a variable name")
        out[k] = v
    return out


def get_number(step: Mapping[str, Any], key: str, default: float) -> float:
    value = step.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"field {key!r} must be a number")
    return float(value)


def get_int(step: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = step.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"field {key!r} must be an integer >= {minimum}")
    return value


def variable(variables: Vars, name: str) -> Array:
    try:
        return variables[name]
    except KeyError:
        raise DataError(f"variable {name!r} is not set (set: {', '.join(sorted(variables)) or 'none'})") from None


def get_choice(step: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = get_str(step, key, default)
    if value not in choices:
        raise ConfigError(f"field {key!r} is {value!r}; expected one of {', '.join(choices)}")
    return value


def io_map(step: Mapping[str, Any], plural: str, singular: str, names: Sequence[str], what: str) -> dict[str, str]:
    """{model tensor: variable} from `inputs: {tensor: VAR}`, or from `input: VAR`
    where the model has exactly one such tensor."""
    if plural in step and singular in step:
        raise ConfigError(f"give either {plural!r} or {singular!r}, not both")
    if singular in step:
        var = get_str(step, singular)
        if len(names) != 1:
            raise ConfigError(
                f"the model has {len(names)} {what}s ({', '.join(names)}); map them with {plural}: {{tensor: variable}}"
            )
        return {names[0]: var}
    mapping = get_mapping(step, plural)
    for tensor in mapping:
        if tensor not in names:
            raise ConfigError(f"the model has no {what} {tensor!r} (it has {', '.join(names)})")
    return mapping


def classifier_answer(probabilities: Array, method: str, *, binary: bool) -> Array:
    """A boosted classifier's probabilities as scikit-learn would answer.

    Boosters give the positive class's probability [N] for a binary objective
    and every class's [N, C] otherwise. predict_proba gives [N, C] (two columns
    for binary, so that classify and threshold read it alike); predict gives
    the class index [N] as int64, positive where p > 0.5 as scikit-learn's
    wrappers decide.
    """
    import numpy as np

    if binary:
        p = probabilities.reshape(-1)
        if method == "predict_proba":
            return np.stack([1 - p, p], axis=1)
        return (p > 0.5).astype(np.int64)
    if method == "predict_proba":
        return probabilities
    return np.asarray(np.argmax(probabilities, axis=1), dtype=np.int64)
