"""Reading fields of a pipeline whose schema check may have failed: every
value's type is checked before it is used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kbuild.runtime.contract.step_types import STEP_TYPES


def step_type(step: Mapping[str, Any]) -> str | None:
    """The step's type if it is one kbuild knows; None for anything else
    (a misspelling, a list, a mapping: the schema reports those)."""
    kind = step.get("type")
    return kind if isinstance(kind, str) and kind in STEP_TYPES else None
