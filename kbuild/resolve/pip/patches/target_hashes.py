"""Only the target's wheels are hashed: pip-tools lifts the wheel-tag filter
while hashing, to make locks portable, but a spin's lock must hold the hashes
of that spin's wheels only."""

from __future__ import annotations

import contextlib
from typing import Any

from kbuild.resolve.pip.patches import require


def apply(target: dict[str, Any]) -> None:
    from piptools.repositories.pypi import PyPIRepository

    require(PyPIRepository, "allow_all_wheels", "piptools.repositories.pypi.PyPIRepository")
    setattr(PyPIRepository, "allow_all_wheels", lambda self: contextlib.nullcontext())
