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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.runtime.errors import ConfigError, DataError
from kbuild.runtime.tensors import Array, Vars

Runner = Callable[[Vars], Vars | None]


@dataclass(frozen=True)
class StepContext:
    name: str
    app_dir: Path
    # The spin's backend options for this step type (pipeline.json's
    # steps[i].options), e.g. {"providers": ["CPUExecutionProvider"]}.
    options: Mapping[str, Any] = field(default_factory=dict)

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
        raise DataError(
            f"variable {name!r} is not set (set: {', '.join(sorted(variables)) or 'none'})"
        ) from None
