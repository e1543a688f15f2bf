"""Artifact targets: zipapp, Docker image, OCI image layout, Docker build context (base.Target)."""

from __future__ import annotations

from kbuild.errors import UsageError
from kbuild.targets.protocol import Progress, Target

TARGETS = ("zipapp", "image", "oci", "context")
PUSHABLE = ("image", "oci")


def make_target(
    name: str,
    *,
    tag: str | None,
    base_image: str | None,
    push: bool,
    progress: Progress,
    offline: bool = False,
    member: bool = False,
) -> Target:
    """The target named on the command line, with its options checked (and,
    for an image, the engine connected) before any slow stage runs."""
    if name not in TARGETS:
        raise UsageError(f"unknown target '{name}'; choose one of {', '.join(TARGETS)}")
    if push and name not in PUSHABLE:
        raise UsageError("--push needs --target image or --target oci")
    if name == "zipapp":
        given = [option for option, value in (("--tag", tag), ("--base-image", base_image)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} apply to the image, oci and context targets, not zipapp")
        from kbuild.targets.zipapp import ZipappTarget

        return ZipappTarget()
    if name == "context":
        from kbuild.targets.context import ContextTarget

        return ContextTarget(tag, base_image)
    from kbuild.targets.engine import connect, try_connect

    if name == "oci":
        from kbuild.targets.oci import OciTarget

        engine = try_connect()
        if engine is not None and not member:
            progress(f"using the Docker engine {engine.version} at {engine.address} for bases and the check")
        return OciTarget(tag, base_image, offline, engine, member)
    from kbuild.targets.image import ImageTarget

    # before the slow stages: no engine, no point
    engine = connect()
    progress(f"using the Docker engine {engine.version} at {engine.address}")
    return ImageTarget(tag, base_image, offline, engine)
