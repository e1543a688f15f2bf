"""Helpers for the compiler tests: example copies, builds, HTTP calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# the spins kbuild ships (spins/*.yaml), as the README's table lists them
SHIPPED_SPINS = (
    "aurora-linux",
    "cpu-linux-aarch64",
    "cpu-linux-x86_64",
    "cuda12-linux-x86_64",
    "cuda13-linux-x86_64",
    "openvino-linux-x86_64",
)


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    return target


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


def build_example(
    tmp: Path, pipeline: str, *extra: str, derive: tuple[str, dict[str, Any]] | None = None, example: str = "iris"
) -> Built:
    """Build examples/<example>/<pipeline>; with derive=(base, changes), <pipeline>
    is first written as the base pipeline with its top-level keys changed."""
    folder = copy_example(example, tmp)
    if derive is not None:
        base, changes = derive
        document = yaml.safe_load((folder / base).read_text())
        (folder / pipeline).write_text(yaml.safe_dump({**document, **changes}, sort_keys=False))
    out = tmp / "dist"
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", out, *extra, folder / pipeline)
    assert proc.returncode == 0, proc.stderr
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    report = json.loads((out / "build-report.json").read_text())
    return Built(artifact, report, folder / pipeline)


def predict(artifact: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """The artifact's `predict` command on JSON inputs: its JSON outputs."""
    proc = subprocess.run(
        [sys.executable, str(artifact), "predict"],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    """Until GET /v2/health/ready on the port answers 200; a server process of
    ours that exits first fails at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
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
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def component_missing(message: str) -> None:
    """A component the tests need is absent: under CI=true that is a failure,
    elsewhere the test is skipped with `message` saying how to provide it."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# Client connections the tests opened, closed after each test (tests/conftest.py),
# so a test that fails half-way leaves no socket open.
_OPEN_CONNECTIONS: list[http.client.HTTPConnection] = []


def http_connection(port: int, timeout: float = 60.0) -> http.client.HTTPConnection:
    """A keep-alive client connection to 127.0.0.1:port, closed after the test."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    _OPEN_CONNECTIONS.append(conn)
    return conn


def close_connections() -> None:
    while _OPEN_CONNECTIONS:
        _OPEN_CONNECTIONS.pop().close()


ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


def elf_machines(pyz: Path) -> set[str]:
    """The CPU architecture of every ELF object inside the artifact's wheels."""
    found: set[str] = set()
    with zipfile.ZipFile(pyz) as outer:
        for name in outer.namelist():
            if not name.startswith("wheels/"):
                continue
            with outer.open(name) as nested, zipfile.ZipFile(nested) as wheel:
                for member in wheel.namelist():
                    with wheel.open(member) as f:
                        head = f.read(20)
                    if head[:4] == b"\x7fELF":
                        found.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
    return found


@contextlib.contextmanager
def serving(artifact: Path, env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[int]:
    """An artifact's server on a free port, ready; its port. Stopped after."""
    port = free_port()
    with subprocess.Popen(
        [sys.executable, str(artifact), "serve", "--http-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            wait_ready(port, proc, timeout=timeout)
            yield port
        finally:
            proc.terminate()
            proc.wait(60)
