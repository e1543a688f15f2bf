"""Typed readers of one field of the serve section, each naming the field in
its error (serve.http.port, serve.kafka.source.topic, ...).

The compiler validated pipeline.json against the schema; these readers guard
the runtime against a hand-edited file and apply the same bounds as the schema,
so the two never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kbuild.runtime.contract.errors import LoadError


class SettingsError(LoadError):
    """A serve setting that the runtime cannot use; the message names it."""


def section(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """parent[key] as a mapping ({} when absent or null)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where}.{key} must be an object")
    return value


def integer(config: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise SettingsError(f"{where}.{key} must be an integer {bound}, got {value!r}")
    return value


def number(config: Mapping[str, Any], key: str, where: str, default: float, *, positive: bool) -> float:
    value = config.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise SettingsError(
            f"{where}.{key} must be a {'positive ' if positive else ''}number"
            f"{'' if positive else ' >= 0'}, got {value!r}"
        )
    return float(value)


def text(config: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def optional_text(config: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if config.get(key) is None else text(config, key, where)


def flag(config: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(f"{where}.{key} must be true or false, got {value!r}")
    return value
