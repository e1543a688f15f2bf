"""Where kbuild's data folders (templates/, schemas/, spins/) are.

In a source checkout they sit at the top of the repository; an installed kbuild
carries them inside the package as kbuild/templates, kbuild/schemas and
kbuild/spin_files (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

import kbuild

_PACKAGE = Path(kbuild.__file__).resolve().parent
_INSTALLED = {"templates": "templates", "schemas": "schemas", "spins": "spin_files"}


def data_dir(name: str) -> Path:
    """The folder holding kbuild's `name` data ("templates", "schemas" or "spins")."""
    for candidate in (_PACKAGE / _INSTALLED[name], _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kbuild's {name}/ folder is missing from this installation")
