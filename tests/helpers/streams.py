"""Shared by the tests of integration/test_kafka_stream.py and its siblings."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.build import free_port
from tests.helpers.kafka import (
    FAST_GROUP,
    IRIS_MODELS,
    REPO,
    App,
    iris_pipeline,
    start_app,
    write_app,
)
from tests.helpers.kafka_broker import Broker

# A python step before the model: drops records whose first feature is negative
# and, with sleep_ms, paces the stream so that tests can act mid-stream.
GATE = """
import time

def make(config):
    delay = config.get("sleep_ms", 0) / 1000

    def run(variables):
        if variables["features"][0][0] < 0:
            return None
        if delay:
            time.sleep(delay)
        return {}

    return run
"""


SAMPLES = [{"inputs": {"features": [[5.1, 3.5, 1.4, 0.2]]}}]


StartFn = Callable[..., App]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.key"
    path.write_text("a shared secret\n")
    return path


@pytest.fixture
def apps(tmp_path: Path, kafka: Broker) -> Iterator[StartFn]:
    """start(kafka_section, gate_sleep_ms=0, root=None, env=None) -> App; every
    app still running at the end is killed."""
    started: list[App] = []

    def start(
        kafka_section: Mapping[str, Any] | None = None,
        *,
        sleep_ms: float = 0,
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
        pipeline: Mapping[str, Any] | None = None,
        files: Mapping[str, str] | None = None,
        models: Mapping[str, Path] | None = None,
    ) -> App:
        if root is None:
            root = tmp_path / f"root{len(started)}"
            if pipeline is None:
                assert kafka_section is not None
                pipeline = iris_pipeline({"consumer": FAST_GROUP, **kafka_section})
                pipeline["steps"].insert(
                    0,
                    {
                        "name": "gate",
                        "type": "python",
                        "function": "gate:make",
                        "code": "code/gate/gate.py",
                        "config": {"sleep_ms": sleep_ms},
                    },
                )
                files = {"code/gate/gate.py": GATE}
            write_app(
                root,
                pipeline,
                models=models or {"model": IRIS_MODELS / "iris.onnx"},
                files=files,
                samples=SAMPLES,
            )
        app = start_app(
            root,
            kafka.bootstrap,
            http_port=free_port(),
            log=tmp_path / f"app{len(started)}.log",
            env=env,
        )
        started.append(app)
        return app

    yield start
    for app in started:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait()


def publish(kafka: Broker, topic: str, version: str, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kbuild.cli",
            "publish-model",
            "--bootstrap-servers",
            kafka.bootstrap,
            "--topic",
            topic,
            "--version",
            version,
            *extra,
            str(model),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def by_key(records: list[Any]) -> dict[bytes, Any]:
    return {r.key: r for r in records}


# A python step after the labels: a record whose first feature is 7.7 gets a
# label far larger than the producer may send.
BLOAT = """
import numpy as np


def make(config):
    def run(variables):
        rows = zip(variables["features"], variables["label"])
        return {"label": np.array(["x" * 5000 if f[0] > 7.6 else s for f, s in rows], dtype=object)}

    return run
"""
