"""examples/iris-stream end to end: built into a zipapp, run against the broker.

400 keyed JSON records are answered correctly; a malformed one lands on the
dead-letter topic; `kbuild publish-model` pushes a signed second version while
the next 400 records stream in; all of those are answered, each by the model
its kbuild-model-version header names, the last ones by version 2.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.build import REPO, copy_example, free_port, kbuild
from tests.helpers.kafka import LABELS, App, Reader, iris_features, produce, start_app
from tests.helpers.kafka_broker import Broker
from tests.helpers.streams import publish

EXAMPLE = REPO / "examples" / "iris-stream"
TOPICS = {"iris-in": 2, "iris-out": 2, "iris-errors": 1, "iris-models": 1}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("iris-stream")
    folder = copy_example("iris-stream", tmp)
    proc = kbuild("--spin", "cpu-linux-x86_64", "--locked", "-o", tmp / "dist", folder / "pipeline.yaml")
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def running(artifact: Path, kafka: Broker, tmp_path: Path) -> Iterator[tuple[App, Path]]:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported, undeclared

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.create_topics([NewTopic(t, n, 1) for t, n in TOPICS.items()]).values():
        future.result(timeout=15)
    key = tmp_path / "model.key"
    key.write_text("the example's key\n")
    app = start_app(
        tmp_path,
        kafka.bootstrap,
        http_port=free_port(),
        log=tmp_path / "app.log",
        env={"KBUILD_MODEL_KEY_FILE": str(key)},
        command=[sys.executable, str(artifact)],
    )
    yield app, key
    if app.process.poll() is None:
        app.process.kill()
        app.process.wait()


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def answer(model: Path, row: list[float]) -> tuple[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"float_input": np.array([row], np.float32)})[0][0]
    return LABELS[int(np.argmax(probs))], float(np.max(probs))


def records(features: np.ndarray, prefix: str, start: int = 0) -> list[tuple[bytes, bytes, None]]:
    return [
        (f"{prefix}-{i}".encode(), json.dumps({"features": [row.tolist()]}).encode(), None)
        for i, row in enumerate(features, start)
    ]


def test_the_streaming_example(kafka: Broker, running: tuple[App, Path]) -> None:
    app, key = running
    models = {b"1": EXAMPLE / "models" / "iris.onnx", b"2": EXAMPLE / "models" / "iris-v2.onnx"}
    first, second = iris_features(400, seed=11), iris_features(400, seed=12)
    rows = {f"a-{i}".encode(): r.tolist() for i, r in enumerate(first)}
    rows.update({f"b-{i}".encode(): r.tolist() for i, r in enumerate(second)})
    out = Reader(kafka.bootstrap, "iris-out")

    produce(
        kafka.bootstrap,
        "iris-in",
        [*records(first[:200], "a"), (b"broken", b"{oops", None), *records(first[200:], "a", 200)],
    )
    assert {a.key for a in out.read_keys({k for k in rows if k.startswith(b"a-")}, timeout=90)} == {
        k for k in rows if k.startswith(b"a-")
    }
    dead = Reader(kafka.bootstrap, "iris-errors").read(1, timeout=30)
    assert [(d.key, d.value) for d in dead] == [(b"broken", b"{oops")]
    assert b"malformed JSON" in dead[0].headers["kbuild-error"]

    # The next 400 stream in over a few seconds; version 2 is published after
    # the first 100 are answered, while records keep arriving. The last 100 go
    # out once the replica says it applied version 2 (on a loaded machine the
    # update may take longer than the 200 records before them).
    applied = threading.Event()

    def stream() -> None:
        batch = records(second, "b")
        for start in range(0, 400, 20):
            if start == 300:
                applied.wait(90)
            produce(kafka.bootstrap, "iris-in", batch[start : start + 20])
            time.sleep(0.15)

    producer = threading.Thread(target=stream)
    producer.start()
    out.read_keys({f"b-{i}".encode() for i in range(100)}, timeout=60)
    published = publish(kafka, "iris-models", "2", models[b"2"], "--key-file", str(key))
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and 'kbuild_kafka_model_info{version="2"} 1' not in metrics_text(app.http_port):
        time.sleep(0.2)
    applied.set()
    producer.join()
    answers = out.read_keys(set(rows), timeout=90)
    assert {a.key for a in answers} == set(rows), "every record answered"

    for a in answers:
        version = a.headers["kbuild-model-version"]
        label, probability = answer(models[version], rows[a.key_bytes])
        assert a.json()["label"] == [label]
        assert a.json()["probability"][0] == pytest.approx(probability, rel=1e-5)
        assert a.headers["kbuild-pipeline"] == b"iris-stream"
    late = sorted((a for a in answers if a.key_bytes.startswith(b"b-")), key=lambda a: int(a.key_bytes[2:]))
    assert {a.headers["kbuild-model-version"] for a in late[-100:]} == {b"2"}
    assert {a.headers["kbuild-model-version"] for a in answers if a.key_bytes.startswith(b"a-")} == {b"1"}
    metrics = app.metrics()
    assert metrics['kbuild_kafka_model_info{version="2"}'] == 1
    assert metrics["kbuild_kafka_records_dead_lettered_total"] == 1
    assert app.stop() == 0
