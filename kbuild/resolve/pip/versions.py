"""Whether the installed pip and pip-tools are versions the patches know."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as version

from kbuild.errors import ResolutionError
from kbuild.resolve.pip import KNOWN_PIP, KNOWN_PIP_TOOLS


def _release(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_versions() -> dict[str, str]:
    """{"pip": V, "pip-tools": V}; ResolutionError for one outside its known range."""
    found: dict[str, str] = {}
    for name, (low, high) in (("pip", KNOWN_PIP), ("pip-tools", KNOWN_PIP_TOOLS)):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            raise ResolutionError(f"{name} is not installed; kbuild resolves and downloads with it") from None
        if not low <= _release(found[name])[:2] < high:
            known = f"{'.'.join(map(str, low))} up to (not including) {'.'.join(map(str, high))}"
            raise ResolutionError(
                f"{name} {found[name]} is installed; kbuild's foreign-platform patches are known to work with {known}",
                [
                    f"install a known version: python -m pip install '{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}'"
                ],
            )
    return found
