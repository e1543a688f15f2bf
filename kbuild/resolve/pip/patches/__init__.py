"""pip and pip-tools patched to resolve as the target platform: one module a patch.

Each module has `apply(target)`, which checks that what it replaces exists in
the installed pip (PatchError naming it otherwise) and replaces it. They run
only inside the compile child process (kbuild.resolve.pip.compile_for_target).
"""

from __future__ import annotations

from typing import Any


class PatchError(RuntimeError):
    """The installed pip or pip-tools lacks what a patch replaces."""


def require(owner: Any, name: str, where: str) -> Any:
    """owner's attribute `name`, or PatchError naming it."""
    try:
        return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    except (KeyError, AttributeError):
        raise PatchError(f"{where}.{name} is not there; this pip version is not one kbuild knows") from None
