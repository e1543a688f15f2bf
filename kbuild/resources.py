"""Where kbuild's data folders (templates/, schemas/, spins/) are.

In a source checkout they sit at the top of the repository; an installed kbuild
carries them as the data packages kbuild.templates, kbuild.schemas and
kbuild.spin_files.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = {"templates": "kbuild.templates", "schemas": "kbuild.schemas", "spins": "kbuild.spin_files"}


def data_dir(name: str) -> Path:
    """The folder holding kbuild's `name` data ("templates", "schemas" or "spins")."""
    try:
        found = importlib.resources.files(_PACKAGES[name])
        path = Path(str(found))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    path = _SOURCE_ROOT / name
    if not path.is_dir():
        raise FileNotFoundError(f"kbuild's {name}/ folder is missing from this installation")
    return path
