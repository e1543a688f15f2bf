"""Fixtures shared by the compiler tests: example pipelines copied into tmp
folders, and builds shared across a session (building is the slow part)."""

from __future__ import annotations

import json
import os
import shutil
import socket
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

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session", autouse=True)
def _app_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Artifacts unpack into a cache of the test session's own, not the user's."""
    path = tmp_path_factory.mktemp("app-cache")
    old = os.environ.get("KBUILD_APP_CACHE")
    os.environ["KBUILD_APP_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KBUILD_APP_CACHE", None)
    else:
        os.environ["KBUILD_APP_CACHE"] = old


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    return target


@pytest.fixture
def iris_dir(tmp_path: Path) -> Path:
    """A private copy of examples/iris (its lock files included)."""
    return copy_example("iris", tmp_path)


def kbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The kbuild command as a user runs it, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "kbuild.cli", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


@dataclass(frozen=True)
class Built:
    artifact: Path
    report: dict[str, Any]
    pipeline: Path


def build_example(tmp: Path, pipeline: str, *extra: str) -> Built:
    folder = copy_example("iris", tmp)
    out = tmp / "dist"
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", out, *extra, folder / pipeline)
    assert proc.returncode == 0, proc.stderr
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    report = json.loads((out / "build-report.json").read_text())
    return Built(artifact, report, folder / pipeline)


@pytest.fixture(scope="session")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_example(tmp_path_factory.mktemp("iris-onnx"), "pipeline.yaml")


@pytest.fixture(scope="session")
def iris_sklearn(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_example(tmp_path_factory.mktemp("iris-sklearn"), "sklearn.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"server on port {port} not ready within {timeout} s")


def post_json(port: int, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
