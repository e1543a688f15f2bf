"""Fixtures for the tests that need a Docker Engine (registered as a plugin by
conftest.py): the engine, the local base image, the iris image built once per
session, a local registry, and helpers around the docker CLI.

scripts/docker-setup.sh starts the engine and builds the base image. Without
them these tests skip on a workstation and fail under CI=true (DESIGN §7).
Images are tagged kbuild-test/*:NAME-PID and removed at the end; the layers
of the main one stay, as the build cache of the next run.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.build import REPO, component_missing, copy_example, free_port

BASE_IMAGE = os.environ.get("KBUILD_TEST_BASE_IMAGE", "kbuild-test/python:3.11-bookworm")
# Test sessions may share an engine: each tags (and removes) images of its own.
SESSION = f"{os.getpid()}"


def session_tag(name: str) -> str:
    return f"kbuild-test/iris:{name}-{SESSION}"


SETUP_HINT = "run `bash scripts/docker-setup.sh` (as root) first"


def missing(what: str) -> None:
    """A component the tests need is absent: fail under CI, skip elsewhere."""
    component_missing(f"{what}; {SETUP_HINT}")


def docker_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    assert docker, "the docker CLI is not on PATH"
    return subprocess.run(
        [docker, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def inspect(reference: str) -> dict[str, Any]:
    proc = docker_cli("image", "inspect", reference)
    assert proc.returncode == 0, proc.stderr
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data[0]


def remove_image(reference: str, keep_cache: bool = False) -> None:
    """Untag and delete; with keep_cache the untagged layers below stay for the next build."""
    docker_cli("image", "rm", *(["--no-prune"] if keep_cache else []), reference)


@pytest.fixture(scope="session")
def engine() -> str:
    """The engine's version; the tests talk to it with the docker CLI and kbuild."""
    if not shutil.which("docker"):
        missing("the docker CLI is not installed")
    proc = docker_cli("version", "--format", "{{.Server.Version}}", timeout=60)
    if proc.returncode != 0:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        missing(f"no Docker engine answers at {where}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def base_image(engine: str) -> str:
    if docker_cli("image", "inspect", BASE_IMAGE).returncode != 0:
        missing(f"the local base image {BASE_IMAGE} does not exist")
    return BASE_IMAGE


@dataclass(frozen=True)
class ImageBuild:
    tag: str
    pipeline: Path
    out: Path
    report: dict[str, Any]
    stdout: str
    stderr: str


def run_kbuild(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The kbuild command in a child process, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "kbuild.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def build_image(
    tmp: Path, pipeline: Path, base: str, tag: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "image",
        "--base-image",
        base,
        "--tag",
        tag,
        "-o",
        tmp / "out",
        *extra,
        pipeline,
        env=env,
    )


def built(tmp: Path, pipeline: Path, proc: subprocess.CompletedProcess[str], tag: str) -> ImageBuild:
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp / "out" / "build-report.json").read_text())
    return ImageBuild(tag, pipeline, tmp / "out", report, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def iris_image(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[ImageBuild]:
    """examples/iris as an image on the local base image, built once per session."""
    tmp = tmp_path_factory.mktemp("iris-image")
    folder = copy_example("iris", tmp)
    tag = session_tag("test")
    try:
        yield built(tmp, folder / "pipeline.yaml", build_image(tmp, folder / "pipeline.yaml", base_image, tag), tag)
    finally:
        remove_image(tag, keep_cache=True)


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    user: str
    password: str
    storage: Path  # the registry's filesystem storage: blobs land under docker/registry/v2/blobs

    def blob_count(self) -> int:
        return sum(1 for _ in (self.storage / "docker/registry/v2/blobs/sha256").glob("*/*/data"))

    def docker_config(self, folder: Path) -> Path:
        """A Docker config folder holding this registry's credentials (written as `docker login` would)."""
        folder.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": token}}}))
        return folder

    def get(self, path: str) -> Any:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(f"http://{self.address}{path}", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[Registry]:
    """Debian's docker-registry on a loopback port, with basic authentication:
    it provisions the user `docker` with a random password and logs it."""
    program = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.access(program, os.X_OK):
        missing("Debian's docker-registry is not installed")
    tmp = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = tmp / "config.yml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
                "http": {"addr": address},
                "auth": {"htpasswd": {"realm": "kbuild-test", "path": str(tmp / "htpasswd")}},
            }
        )
    )
    log = tmp / "registry.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([program, "serve", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        password = _wait_for_registry(address, log, proc)
        yield Registry(address, "docker", password, tmp / "data")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_registry(address: str, log: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        found = re.search(r"password=(\S+) user=docker", log.read_text())
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=1)
        except urllib.error.HTTPError as answer:
            if answer.code == 401 and found:  # up, and asking for credentials
                return found[1]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"docker-registry did not answer on {address}: {log.read_text()[-2000:]}")
