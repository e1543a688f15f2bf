"""Helpers for the streaming tests: artifact roots, running them, Kafka clients.

Roots are written as the compiler would (app/ only: the tests run the runtime
from the repository through PYTHONPATH), so most streaming tests need no build.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers import iris

REPO = Path(__file__).resolve().parents[2]
IRIS_MODELS = iris.MODELS
LABELS = iris.LABELS
FAST_GROUP = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}


def iris_pipeline(kafka: Mapping[str, Any], name: str = "iris") -> dict[str, Any]:
    """The iris pipeline (tests.helpers.iris) streaming with these Kafka settings."""
    return iris.iris_pipeline(name=name, serve={"kafka": dict(kafka)})


def write_app(
    root: Path,
    pipeline: Mapping[str, Any],
    models: Mapping[str, Path] | None = None,
    files: Mapping[str, str] | None = None,
    samples: list[Any] | None = None,
) -> Path:
    """ROOT/app as the compiler lays it out: models[step] is copied under
    models/<step>/, files are written relative to app/."""
    app = root / "app"
    app.mkdir(parents=True)
    spec = json.loads(json.dumps(pipeline))
    for step in spec["steps"]:
        if step["name"] in (models or {}):
            source = Path((models or {})[step["name"]])
            dest = app / "models" / step["name"] / source.name
            dest.parent.mkdir(parents=True)
            shutil.copyfile(source, dest)
            step["model"] = f"models/{step['name']}/{source.name}"
    for rel, text in (files or {}).items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(text)
    (app / "pipeline.json").write_text(json.dumps(spec, indent=2))
    (app / "samples.json").write_text(json.dumps(samples or []))
    return root


@dataclass
class App:
    """A running artifact root (`python -m kbuild.runtime --root ROOT serve`)."""

    process: subprocess.Popen[bytes]
    http_port: int
    log: Path
    root: Path

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_for_event(self, event: str, timeout: float = 60.0, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited with {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} event within {timeout} s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_app(
    root: Path,
    bootstrap: str,
    *,
    http_port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    command: list[str] | None = None,
) -> App:
    """Runs the root with the repository's runtime, or `command` (a zipapp)."""
    full_env = {**os.environ, "KBUILD_KAFKA_BOOTSTRAP_SERVERS": bootstrap, **(env or {})}
    if command is None:
        full_env["PYTHONPATH"] = str(REPO)
    argv = command or [sys.executable, "-m", "kbuild.runtime", "--root", str(root)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "serve", "--http-port", str(http_port)],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return App(process, http_port, log, root)


# -- Kafka clients


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]],
    partition: int | None = None,
) -> None:
    from confluent_kafka import Producer

    errors: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for key, value, headers in records:
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers or None}
        if partition is not None:
            kwargs["partition"] = partition
        kwargs["on_delivery"] = lambda err, msg: errors.append(err) if err else None
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0, "the broker did not take the test records"
    assert not errors, errors


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int

    def json(self) -> Any:
        return json.loads(self.value or b"null")

    @property
    def key_bytes(self) -> bytes:
        """The key of a record that has one (every test record has)."""
        assert self.key is not None, "a record without a key"
        return self.key


_OPEN_READERS: list[Reader] = []


def close_readers() -> None:
    """Before the broker stops: open clients would log its absence at length."""
    while _OPEN_READERS:
        _OPEN_READERS.pop().close()


@dataclass(eq=False)
class Reader:
    """Reads every partition of a topic from the beginning, outside any group."""

    bootstrap: str
    topic: str
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "kbuild-tests-reader",
                "enable.auto.commit": False,
            }
        )
        meta = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in meta.partitions])
        _OPEN_READERS.append(self)

    def read(self, count: int, timeout: float = 60.0) -> list[Record]:
        """Until `count` records in all, or the timeout; returns all read so far."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None:
                    self.records.append(
                        Record(
                            msg.key(),
                            msg.value(),
                            _headers(msg.headers()),
                            msg.partition() or 0,
                            msg.offset() or 0,
                        )
                    )
        return self.records

    def read_keys(self, keys: set[bytes | None], timeout: float = 60.0) -> list[Record]:
        """Until a record of every key in `keys` was read, or the timeout."""
        deadline = time.monotonic() + timeout
        while not keys <= {r.key for r in self.records} and time.monotonic() < deadline:
            self.read(len(self.records) + 1, timeout=0.5)
        return self.records

    def settle(self, quiet: float = 2.0, timeout: float = 30.0) -> list[Record]:
        """Until no record arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = -1
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            self.read(len(self.records) + 1, timeout=0.3)
            if len(self.records) != last:
                last = len(self.records)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                break
        return self.records

    def close(self) -> None:
        if self in _OPEN_READERS:
            _OPEN_READERS.remove(self)
        self._consumer.close()


# -- models and expected answers


def iris_features(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_iris

    x: np.ndarray = load_iris().data.astype(np.float32)
    rng = np.random.default_rng(seed)
    picked: np.ndarray = x[rng.integers(0, len(x), n)]
    return picked


def expected_labels(model: Path, features: np.ndarray) -> list[str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"float_input": features})[0]
    return [LABELS[i] for i in np.argmax(probs, axis=1)]


def make_rotated_model(dest: Path) -> Path:
    """A second iris model that answers differently: trained with each label
    moved one class on, so its answers are the first model's rotated."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(data.data.astype(np.float32), (data.target + 1) % 3)
    onx = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={"zipmap": False},
        target_opset=17,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(onx.SerializeToString())
    return dest


def json_records(features: np.ndarray, prefix: str = "r") -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [
        (f"{prefix}{i}".encode(), json.dumps({"features": [row.tolist()]}).encode(), [("trace", f"t{i}".encode())])
        for i, row in enumerate(features)
    ]


def _headers(headers: Any) -> dict[str, bytes]:
    """A record's headers (a list of pairs, as the consumer gives them) by name."""
    out: dict[str, bytes] = {}
    for name, value in headers or []:
        if value is not None:
            out[name] = value if isinstance(value, bytes) else value.encode()
    return out
