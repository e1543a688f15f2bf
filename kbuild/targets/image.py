"""The image target: build the context through the Docker Engine API.

The engine builds the same tarball that `--target context` writes, with the
build's network set to none (wheels come from the context, never an index).
The finished image is described for the report, checked in a container where
the engine's machine can run the spin, and pushed on request with the engine
client's own credentials (~/.docker/config.json and its helpers).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.utils
import requests

from ..errors import BuildError, VerificationError
from ..report import StageTimer
from ..runtime.cli import TRACE_ENV
from ..spins import Spin
from ..verify import DEFAULT_TIMEOUT_S, Verification, last_step, untraced
from .base import Packaged, Progress, Rendered, Staged
from .context import render_image_files, write_context
from .deploy import write_deployment
from .image_settings import ImageSettings, check_options

_CONNECT_TIMEOUT_S = 15
# A build step may print nothing for long (unpacking large wheels); the client
# must not give up on the stream meanwhile.
_STREAM_TIMEOUT_S = 3600
_TAIL_LINES = 25
_STEP_WIDTH = 100
_CACHED = "---> Using cache"
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_SPIN_ARCH = {v: k for k, v in _DOCKER_ARCH.items()}
_DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Engine:
    client: Any  # docker.DockerClient
    address: str
    arch: str  # the engine machine's, in spin terms (x86_64, aarch64)
    version: str


def connect() -> Engine:
    """The engine named by DOCKER_HOST (default: the local socket), or a BuildError saying how to get one."""
    address = os.environ.get("DOCKER_HOST") or _DEFAULT_HOST
    try:
        client = docker.from_env(timeout=_CONNECT_TIMEOUT_S)
        version = client.version()
    except docker.errors.DockerException as error:
        raise BuildError(
            f"no Docker engine answers at {address} (DOCKER_HOST={os.environ.get('DOCKER_HOST') or 'unset'})",
            [
                f"reason: {_one_line(error)}",
                "start an engine on this machine (`sudo systemctl start docker`, or `sudo dockerd &`), "
                "or set DOCKER_HOST to one that runs (e.g. ssh://user@host or tcp://host:2376)",
                "--target context writes the build context without an engine",
            ],
        ) from None
    client.api.timeout = _STREAM_TIMEOUT_S
    machine = str(version.get("Arch", ""))
    return Engine(client, address, _SPIN_ARCH.get(machine, machine), str(version.get("Version", "?")))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _error_text(chunk: Mapping[str, Any]) -> str:
    detail = chunk.get("errorDetail")
    if isinstance(detail, Mapping) and detail.get("message"):
        return str(detail["message"]).strip()
    return str(chunk.get("error", "")).strip()


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
                platform=f"linux/{_DOCKER_ARCH.get(settings.arch, settings.arch)}",
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    raise BuildError(f"the image build failed at {step}", [*output, _error_text(chunk)])
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
        raise BuildError(f"the Docker engine at {engine.address} refused the build", [_api_error(error)]) from None
    # requests' errors (a dropped stream, a timeout) are OSErrors
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(f"lost the Docker engine at {engine.address} during {step}", [_one_line(error)]) from None
    if image_id is None:
        try:
            image_id = str(engine.client.api.inspect_image(settings.tag)["Id"])
        except docker.errors.DockerException as error:
            raise BuildError(f"the engine reported no image for {settings.tag}", [*output, _one_line(error)]) from None
    return BuiltImage(image_id, steps, steps - stages - cached)


def _shorten(instruction: str) -> str:
    """One terminal line: a HEALTHCHECK or LABEL instruction runs long."""
    text = " ".join(instruction.split())
    return text if len(text) <= _STEP_WIDTH else text[: _STEP_WIDTH - 3] + "..."


def _api_error(error: Any) -> str:
    return " ".join(str(getattr(error, "explanation", None) or error).split())


def describe_image(engine: Engine, built: BuiltImage, settings: ImageSettings) -> dict[str, Any]:
    """What the report says of the image: size and layers, also relative to the base."""
    api = engine.client.api
    try:
        image = api.inspect_image(built.id)
        base = api.inspect_image(settings.base)
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(f"cannot inspect the built image {built.id}", [_one_line(error)]) from None
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
        "network": settings.network or "default",
        "engine": {"address": engine.address, "version": engine.version},
    }


def runs_here(engine: Engine, spin: Spin) -> str | None:
    """Why the engine's machine cannot run the spin's images, or None if it can."""
    if spin.os != "linux" or spin.arch != engine.arch:
        return f"spin {spin.name} runs on {spin.os}/{spin.arch}; the engine at {engine.address} runs linux/{engine.arch}"
    if spin.accelerator != "cpu":
        return f"spin {spin.name} needs a {spin.accelerator} accelerator, which this check does not attach"
    return None


def check_image(engine: Engine, image_id: str, spin: Spin, timeout: float = DEFAULT_TIMEOUT_S) -> Verification:
    """Run the image's `check` as it will be deployed: no network, read-only root.

    Raises VerificationError if the samples do not reproduce, or hang."""
    reason = runs_here(engine, spin)
    if reason:
        return Verification("not verified", f"{reason}; run `check` in the container where it is deployed")
    env = {str(k): str(v) for k, v in (spin.runtime.get("env") or {}).items()}
    env[TRACE_ENV] = "1"
    hung = False
    try:
        container = engine.client.containers.create(
            image_id, command=["check"], network_mode="none", read_only=True, tmpfs={"/tmp": ""}, environment=env
        )
        try:
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except requests.exceptions.RequestException:  # the wait timed out
                hung, status = True, {}
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace").strip()
        finally:
            container.remove(force=True)
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError("cannot run the built image's check", [_one_line(error)]) from None
    if hung:
        raise VerificationError(
            f"the image's check did not finish within {timeout:g} s: {last_step(output)}",
            ["raise --verify-timeout if the pipeline is slow, or fix the step that hangs"],
        )
    lines = untraced(output)
    if int(status.get("StatusCode", 1)) != 0:
        raise VerificationError("the built image failed its check", lines[-20:])
    return Verification("passed", f"{lines[-1] if lines else 'check passed'} (inside the container)")


def push_image(engine: Engine, tag: str, progress: Progress) -> dict[str, str]:
    """Push to the registry the tag names; a refusal carries the registry's answer."""
    repository, ref = docker.utils.parse_repository_tag(tag)
    ref = ref or "latest"
    digest = ""
    try:
        for chunk in engine.client.api.push(repository, tag=ref, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                raise BuildError(f"pushing {tag} failed", [_error_text(chunk)])
            aux = chunk.get("aux")
            if isinstance(aux, Mapping) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = str(chunk.get("status", ""))
            if chunk.get("id") and (status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")):
                progress(f"push layer {chunk['id']}: {status.lower()}")
    except docker.errors.APIError as error:
        raise BuildError(f"pushing {tag} failed", [_api_error(error)]) from None
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(f"pushing {tag} failed", [_one_line(error)]) from None
    registry, _ = docker.auth.resolve_repository_name(repository)
    return {"tag": tag, "registry": registry, "digest": digest}


class ImageTarget:
    """An image built by the engine from the build context, checked in a container."""

    name = "image"

    def __init__(self, tag: str | None, base_image: str | None, progress: Progress) -> None:
        check_options(tag, base_image)
        self.tag = tag
        self.base_image = base_image
        # before the slow stages: no engine, no point
        self.engine = connect()
        progress(f"using the Docker engine {self.engine.version} at {self.engine.address}")

    def render(self, staged: Staged) -> Rendered:
        return render_image_files(staged, self.tag, self.base_image)

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged:
        settings: ImageSettings = rendered.settings
        context = staged.scratch / "context.tar"
        with timer.stage("package"):
            write_context(context, rendered.container, staged.plan, staged.root, staged.wheels)
        progress(f"building image {settings.tag} on {settings.base} (network: {settings.network or 'default'})")
        with timer.stage("image"):
            built = build_image(self.engine, context, settings, progress)
            image = describe_image(self.engine, built, settings)
        with timer.stage("deploy"):
            deployment = write_deployment(staged.output_dir, rendered.deployment)
        progress(f"built image {image['tag']} ({image['id']}, {image['bytes']} bytes, {image['layers']} layers)")
        return Packaged(
            image["tag"],
            {"image": image["tag"], "id": image["id"], "bytes": image["bytes"]},
            {"image": image, "deployment": [str(p.resolve()) for p in deployment]},
        )

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification:
        return check_image(self.engine, packaged.sections["image"]["id"], staged.plan.spin, timeout)

    def push(self, packaged: Packaged, progress: Progress) -> None:
        image = packaged.sections["image"]
        progress(f"pushing {image['tag']}")
        image["pushed"] = push_image(self.engine, image["tag"], progress)
        progress(f"pushed {image['tag']} ({image['pushed']['digest']})")
