"""`${NAME}` in client settings: a value read from the environment when the
artifact connects, so that no secret is written in the pipeline, the image or
a manifest (the Deployment takes NAME from a Secret).

Only whole values are references; a value that merely contains `${` is
literal. A reference whose variable is unset is refused when the client is
configured, naming the setting and the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kbuild.runtime.contract.fields import SettingsError

REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def reference_name(value: Any) -> str | None:
    """NAME when `value` is exactly ${NAME}."""
    found = REFERENCE.match(value) if isinstance(value, str) else None
    return found[1] if found else None


def resolve(value: Any, env: Mapping[str, str], where: str) -> Any:
    name = reference_name(value)
    if name is None:
        return value
    if name not in env:
        raise SettingsError(f"{where} is ${{{name}}}, and the environment variable {name} is not set")
    return env[name]


def resolve_all(settings: Mapping[str, Any], env: Mapping[str, str], where: str) -> dict[str, Any]:
    return {key: resolve(value, env, f"{where}.{key}") for key, value in settings.items()}
