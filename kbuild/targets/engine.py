"""The Docker engine, where one is used: named by DOCKER_HOST (default: the
local socket), connected through the Docker SDK."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from kbuild.errors import BuildError

_CONNECT_TIMEOUT_S = 15
# A build step or a load may print nothing for long (unpacking large wheels);
# the client must not give up on the stream meanwhile.
STREAM_TIMEOUT_S = 3600
DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_SPIN_ARCH = {v: k for k, v in DOCKER_ARCH.items()}
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
                f"reason: {one_line(error)}",
                "start an engine on this machine (`sudo systemctl start docker`, or `sudo dockerd &`), "
                "or set DOCKER_HOST to one that runs (e.g. ssh://user@host or tcp://host:2376)",
                "--target oci writes (and with --push sends) the image without an engine",
            ],
        ) from None
    client.api.timeout = STREAM_TIMEOUT_S
    machine = str(version.get("Arch", ""))
    return Engine(client, address, _SPIN_ARCH.get(machine, machine), str(version.get("Version", "?")))


def try_connect() -> Engine | None:
    """The engine if one answers, else None (quickly: DOCKER_HOST pointing nowhere is not an error here)."""
    try:
        return connect()
    except BuildError:
        return None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def error_text(chunk: Mapping[str, Any]) -> str:
    detail = chunk.get("errorDetail")
    if isinstance(detail, Mapping) and detail.get("message"):
        return str(detail["message"]).strip()
    return str(chunk.get("error", "")).strip()


def api_error(error: Any) -> str:
    return " ".join(str(getattr(error, "explanation", None) or error).split())
