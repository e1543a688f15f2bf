"""Helpers for the runtime tests: artifact roots written as the compiler would.

The roots have no site/ folder: the tests run with the repository on sys.path
(subprocesses get it through PYTHONPATH).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.helpers import iris
from tests.helpers.build import http_connection

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
IRIS_LABELS = iris.LABELS
SETOSA = iris.SETOSA
VIRGINICA = iris.VIRGINICA

# make_root(pipeline, models=..., code=..., samples=..., build=...) -> ROOT
MakeRoot = Callable[..., Path]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_root(
    root: Path,
    pipeline: Mapping[str, Any],
    *,
    models: Mapping[str, Path] | None = None,
    code: Mapping[str, Mapping[str, str]] | None = None,
    samples: list[Any] | None = None,
    build: Mapping[str, Any] | None = None,
) -> Path:
    """Write ROOT/app as the compiler would: models[step] is copied to
    models/<step>/<file name> and the step's `model` rewritten; code[step] maps
    file names to sources under code/<step>/ (the step's `code` is taken
    relative to that folder)."""
    app = root / "app"
    app.mkdir(parents=True)
    spec = json.loads(json.dumps(pipeline))
    by_name = {s["name"]: s for s in spec["steps"]}
    for step, src in (models or {}).items():
        dest = app / "models" / step / src.name
        dest.parent.mkdir(parents=True)
        shutil.copyfile(src, dest)
        by_name[step]["model"] = f"models/{step}/{src.name}"
    for step, files in (code or {}).items():
        for rel, text in files.items():
            dest = app / "code" / step / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
        by_name[step]["code"] = f"code/{step}/{by_name[step].get('code', '')}".rstrip("/")
    (app / "pipeline.json").write_text(json.dumps(spec, indent=2))
    if samples is not None:
        (app / "samples.json").write_text(json.dumps(samples))
    if build is not None:
        (app / "build.json").write_text(json.dumps(build, indent=2))
    return root


def iris_pipeline(**extra: Any) -> dict[str, Any]:
    """The iris pipeline (tests.helpers.iris) for the runtime tests' own ONNX
    model (input X), which write_root places under models/model/."""
    return iris.iris_pipeline(onnx_input="X", model=None, **extra)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("KBUILD_HTTP_PORT", None)
    env.pop("KBUILD_GRPC_PORT", None)
    env.update(extra)
    return env


GUARD_CODE = """
import time


def make(config):
    time.sleep(config.get("load_delay_s", 0))  # lets tests see "not ready"

    def guard(variables):
        x = variables["features"]
        if (x < 0).any():
            raise ValueError("negative measurement")
        if (x == 0).all():
            return None  # nothing measured: drop the record
        return {}

    return guard
"""


def guarded_iris_pipeline(load_delay_s: float = 0, **extra: Any) -> dict[str, Any]:
    """guard (python: raises on negative inputs, drops all-zero records) ->
    model (onnx) -> labels (classify). write_root needs models={"model": ...}
    and code={"guard": {"rt_guard.py": GUARD_CODE}}."""
    spec = iris_pipeline(**extra)
    spec["steps"].insert(
        0,
        {
            "name": "guard",
            "type": "python",
            "function": "rt_guard:make",
            "code": "rt_guard.py",
            "config": {"load_delay_s": load_delay_s},
        },
    )
    return spec


def write_guarded_iris(root: Path, onnx_model: Path, load_delay_s: float = 0, **kwargs: Any) -> Path:
    return write_root(
        root,
        guarded_iris_pipeline(load_delay_s),
        models={"model": onnx_model},
        code={"guard": {"rt_guard.py": GUARD_CODE}},
        **kwargs,
    )


class Server:
    """A server subprocess; its stderr lines are collected by a thread so that
    a test can wait for a log event without ever blocking for good."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kbuild.runtime", "--root", str(root), "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env or subprocess_env(),
            cwd=cwd or REPO.parent,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.put(line)

    def wait_event(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                return dict(record)
        raise AssertionError(f"no {event!r} log line; stderr so far: {''.join(self.seen)}")

    def started(self) -> Server:
        record = self.wait_event("start")
        self.port = int(record["endpoints"][0].rsplit(":", 1)[1])
        return self

    def stderr_rest(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def connect(self) -> http.client.HTTPConnection:
        return http_connection(self.port, TIMEOUT_S)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def edit_pipeline(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change an artifact root's pipeline.json in place."""
    path = root / "app" / "pipeline.json"
    document: dict[str, Any] = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def slow_guarded_iris(root: Path, model: Path, code: str, serve: dict[str, Any]) -> Path:
    """The guarded iris root (write_guarded_iris) whose first step runs `code`'s
    make() (module rt_slow) instead of the guard, served as `serve` says."""
    write_guarded_iris(root, model)

    def slow(document: dict[str, Any]) -> None:
        document["steps"][0].update(function="rt_slow:make", code="code/guard/rt_slow.py")
        document["serve"] = serve

    edit_pipeline(root, slow)
    (root / "app" / "code" / "guard" / "rt_slow.py").write_text(code)
    return root
