"""Artifact targets: zipapp, Docker image, Docker build context (base.Target)."""

from __future__ import annotations

from ..errors import UsageError
from .base import Progress, Target

TARGETS = ("zipapp", "image", "context")


def make_target(name: str, *, tag: str | None, base_image: str | None, push: bool, progress: Progress) -> Target:
    """The target named on the command line, with its options checked (and,
    for an image, the engine connected) before any slow stage runs."""
    if name not in TARGETS:
        raise UsageError(f"unknown target '{name}'; choose one of {', '.join(TARGETS)}")
    if push and name != "image":
        raise UsageError("--push needs --target image")
    if name == "zipapp":
        given = [option for option, value in (("--tag", tag), ("--base-image", base_image)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} apply to --target image and --target context, not zipapp")
        from .zipapp import ZipappTarget

        return ZipappTarget()
    if name == "context":
        from .context import ContextTarget

        return ContextTarget(tag, base_image)
    from .image import ImageTarget

    return ImageTarget(tag, base_image, progress)
