"""The Dockerfile route: the engine builds the context tarball that
`--target context` writes, with the build's network set to none.

kbuild's images are assembled (targets.image), not built this way; the route
stays for `--target context` users' own builders, for the benchmark that
compares the two, and for the test that checks both hold the same files.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from kbuild.errors import BuildError
from kbuild.targets.engine import DOCKER_ARCH, Engine, api_error, error_text, one_line
from kbuild.targets.image_settings import ImageSettings
from kbuild.targets.protocol import Progress

_TAIL_LINES = 25
_STEP_WIDTH = 100
_CACHED = "---> Using cache"
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


@dataclass(frozen=True)
class BuiltImage:
    id: str
    steps: int  # Dockerfile steps
    rebuilt_steps: int  # of which the engine ran, not took from its cache (FROM runs nothing)


def build_image(engine: Engine, context: Path, settings: ImageSettings, progress: Progress) -> BuiltImage:
    """Build the context tarball. One progress line per Dockerfile step."""
    step = "the build"
    steps = cached = stages = 0
    output: deque[str] = deque(maxlen=_TAIL_LINES)
    image_id = None
    try:
        with context.open("rb") as tar:
            stream: Iterable[Mapping[str, Any]] = engine.client.api.build(
                fileobj=tar,
                custom_context=True,
                tag=settings.tag,
                network_mode=settings.network,
                platform=f"linux/{DOCKER_ARCH.get(settings.arch, settings.arch)}",
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    raise BuildError(f"the image build failed at {step}", [*output, error_text(chunk)])
                aux = chunk.get("aux")
                if isinstance(aux, Mapping) and aux.get("ID"):
                    image_id = str(aux["ID"])
                for line in str(chunk.get("stream", "")).splitlines():
                    line = line.rstrip()
                    found = _STEP_RE.match(line)
                    if found:
                        steps += 1
                        stages += found[3].upper().startswith("FROM ")
                        step = f"step {found[1]}/{found[2]} ({_shorten(found[3])})"
                        output.clear()
                        progress(f"image step {found[1]}/{found[2]}: {_shorten(found[3])}")
                    elif line.strip() == _CACHED:
                        cached += 1
                    elif line:
                        output.append(line)
    except docker.errors.APIError as error:
        raise BuildError(f"the Docker engine at {engine.address} refused the build", [api_error(error)]) from None
    # requests' errors (a dropped stream, a timeout) are OSErrors
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(f"lost the Docker engine at {engine.address} during {step}", [one_line(error)]) from None
    if image_id is None:
        try:
            image_id = str(engine.client.api.inspect_image(settings.tag)["Id"])
        except docker.errors.DockerException as error:
            raise BuildError(f"the engine reported no image for {settings.tag}", [*output, one_line(error)]) from None
    return BuiltImage(image_id, steps, steps - stages - cached)


def _shorten(instruction: str) -> str:
    """One terminal line: a HEALTHCHECK or LABEL instruction runs long."""
    text = " ".join(instruction.split())
    return text if len(text) <= _STEP_WIDTH else text[: _STEP_WIDTH - 3] + "..."


def describe_image(engine: Engine, built: BuiltImage, settings: ImageSettings) -> dict[str, Any]:
    """What the report says of the image: size and layers, also relative to the base."""
    api = engine.client.api
    try:
        image = api.inspect_image(built.id)
        base = api.inspect_image(settings.base)
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(f"cannot inspect the built image {built.id}", [one_line(error)]) from None
    layers = len(image["RootFS"].get("Layers") or [])
    base_layers = len(base["RootFS"].get("Layers") or [])
    return {
        "id": image["Id"],
        "tag": settings.tag,
        "bytes": int(image["Size"]),
        "bytes_over_base": int(image["Size"]) - int(base["Size"]),
        "layers": layers,
        "layers_over_base": layers - base_layers,
        "base": {"name": settings.base, "id": base["Id"], "bytes": int(base["Size"])},
        "user": image["Config"].get("User", ""),
        "steps": built.steps,
        "rebuilt_steps": built.rebuilt_steps,
        "network": settings.network,
        "engine": {"address": engine.address, "version": engine.version},
    }
