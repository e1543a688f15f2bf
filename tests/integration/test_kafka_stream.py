"""The Kafka transport against a real Kafka-protocol broker (Tansu, started by
the `kafka` fixture), with confluent-kafka producers and consumers on this side.

Each test runs artifact roots (`python -m kbuild.runtime --root ROOT serve`) on
topics of its own. Group timeouts are short so that joins and rebalances take
about a second and a half.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from tests.helpers.build import free_port
from tests.helpers.kafka import (
    FAST_GROUP,
    IRIS_MODELS,
    REPO,
    App,
    Reader,
    expected_labels,
    iris_features,
    iris_pipeline,
    json_records,
    make_rotated_model,
    produce,
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
            sys.executable, "-m", "kbuild.cli", "publish-model",
            "--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--version", version, *extra, str(model),
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


def test_records_answered_with_their_keys_failures_dead_lettered(kafka: Broker, apps: StartFn) -> None:
    source, sink, dead = kafka.topic("in", 2), kafka.topic("out", 2), kafka.topic("dead")
    app = apps(
        {
            "source": {"topic": source},
            "sink": {"topic": sink},
            "dead_letter": {"topic": dead},
            "batching": {"max_batch_size": 16, "max_latency_ms": 2},
        }
    )
    features = iris_features(100)
    records = json_records(features)
    malformed = (b"bad-json", b'{"features": [[1, 2,', [("trace", b"tb")])
    wrong_shape = (b"bad-shape", b'{"features": [[1, 2, 3]]}', None)
    dropped = [(f"drop{i}".encode(), b'{"features": [[-1, 0, 0, 0]]}', None) for i in range(2)]
    produce(kafka.bootstrap, source, [*records[:50], malformed, *dropped, wrong_shape, *records[50:]])

    outputs = Reader(kafka.bootstrap, sink).read(100, timeout=60)
    answers = by_key(outputs)
    assert set(answers) == {k for k, _, _ in records}, "every record answered, under its own key"
    for (key, _, _), label in zip(records, expected_labels(IRIS_MODELS / "iris.onnx", features), strict=True):
        record = answers[key]
        assert record.json()["label"] == [label]
        assert record.headers["trace"] == b"t" + key[1:]  # the input's own headers travel on
        assert record.headers["kbuild-pipeline"] == b"iris"
        assert record.headers["kbuild-pipeline-version"] == b"1.0.0"
        assert record.headers["kbuild-model-version"] == b"built-in"

    failed = by_key(Reader(kafka.bootstrap, dead).read(2, timeout=30))
    assert set(failed) == {b"bad-json", b"bad-shape"}
    assert failed[b"bad-json"].value == malformed[1], "the original bytes, untouched"
    assert failed[b"bad-json"].headers["trace"] == b"tb"
    assert failed[b"bad-json"].headers["kbuild-error-stage"] == b"decode"
    assert b"malformed JSON" in failed[b"bad-json"].headers["kbuild-error"]
    assert b"expected shape [-1, 4], got [1, 3]" in failed[b"bad-shape"].headers["kbuild-error"]
    assert failed[b"bad-shape"].headers["kbuild-source-topic"] == source.encode()

    assert app.status("/v2/health/live") == 200 and app.status("/v2/health/ready") == 200
    # Outputs count once acknowledged, which the stream learns when it commits.
    wait_for(lambda: app.metrics()["kbuild_kafka_records_out_total"] == 100, 10, "metrics")
    metrics = app.metrics()
    assert metrics["kbuild_kafka_records_in_total"] == 104
    assert metrics["kbuild_kafka_records_dropped_total"] == 2
    assert metrics["kbuild_kafka_records_dead_lettered_total"] == 2
    assert metrics['kbuild_kafka_records_failed_total{stage="decode"}'] == 2
    assert metrics['kbuild_kafka_model_info{version="built-in"}'] == 1
    assert metrics["kbuild_kafka_batch_size_count"] >= 104 / 16
    assert "kbuild_kafka_consumer_lag_sum" in metrics
    assert app.stop() == 0

    # Stopped cleanly: everything answered is committed.
    from confluent_kafka import Consumer, TopicPartition

    group = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "iris"})
    committed = group.committed([TopicPartition(source, p) for p in (0, 1)], timeout=10)
    ends = [group.get_watermark_offsets(TopicPartition(source, p), timeout=10)[1] for p in (0, 1)]
    group.close()
    assert sum(tp.offset for tp in committed) == 104 >= sum(ends)


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


def test_an_output_the_producer_refuses_sends_its_input_to_dead_letters(kafka: Broker, apps: StartFn) -> None:
    source, sink, dead = kafka.topic("in"), kafka.topic("out"), kafka.topic("dead")
    pipeline = iris_pipeline(
        {
            "source": {"topic": source},
            "sink": {"topic": sink},
            "dead_letter": {"topic": dead},
            "consumer": FAST_GROUP,
            "producer": {"message.max.bytes": 2000},
        }
    )
    pipeline["steps"].append(
        {"name": "bloat", "type": "python", "function": "bloat:make", "code": "code/bloat/bloat.py",
         "outputs": {"label": "label"}}
    )  # fmt: skip
    app = apps(pipeline=pipeline, files={"code/bloat/bloat.py": BLOAT})
    features = iris_features(30, seed=5)
    features[7] = [7.7, 3.0, 6.1, 2.3]
    records = json_records(features)
    produce(kafka.bootstrap, source, records)
    answers = by_key(Reader(kafka.bootstrap, sink).read(29, timeout=60))
    assert b"r7" not in answers and len(answers) == 29
    [failed] = Reader(kafka.bootstrap, dead).read(1, timeout=30)
    assert failed.key == b"r7" and failed.value == records[7][1], "the original record"
    assert failed.headers["kbuild-error-stage"] == b"delivery"
    assert b"too large" in failed.headers["kbuild-error"].lower()
    wait_for(lambda: app.metrics()["kbuild_kafka_records_out_total"] == 29, 10, "metrics")
    assert app.metrics()["kbuild_kafka_records_dead_lettered_total"] == 1
    assert app.status("/v2/health/live") == 200

def test_msgpack_records(kafka: Broker, apps: StartFn) -> None:
    source, sink = kafka.topic("in"), kafka.topic("out")
    apps({"source": {"topic": source, "encoding": "msgpack"}, "sink": {"topic": sink, "encoding": "msgpack"}})
    features = iris_features(20, seed=3)
    produce(
        kafka.bootstrap,
        source,
        [(str(i).encode(), msgpack.packb({"features": [row.tolist()]}), None) for i, row in enumerate(features)],
    )
    answers = by_key(Reader(kafka.bootstrap, sink).read(20, timeout=60))
    labels = expected_labels(IRIS_MODELS / "iris.onnx", features)
    assert [msgpack.unpackb(answers[str(i).encode()].value)["label"] for i in range(20)] == [[x] for x in labels]


def test_model_updates_are_verified_applied_and_replayed(
    kafka: Broker, apps: StartFn, key_file: Path, tmp_path: Path
) -> None:
    source, sink, models = kafka.topic("in"), kafka.topic("out"), kafka.topic("models")
    section = {
        "source": {"topic": source},
        "sink": {"topic": sink},
        "models": {"topic": models, "step": "model", "built_in_version": "1"},
    }
    env = {"KBUILD_MODEL_KEY_FILE": str(key_file)}
    app = apps(section, env=env)
    reader = Reader(kafka.bootstrap, sink)
    first = iris_features(30, seed=1)
    produce(kafka.bootstrap, source, json_records(first, "a"))
    assert len(reader.read(30, timeout=60)) == 30

    v2 = make_rotated_model(tmp_path / "v2" / "iris.onnx")
    done = publish(kafka, models, "2", v2, "--key-file", str(key_file), "--chunk-size", "256")
    assert done.returncode == 0, done.stderr
    assert "as version 2" in done.stdout and "signed" in done.stdout
    assert f"in {-(-v2.stat().st_size // 256)} messages" in done.stdout
    other_key = tmp_path / "other.key"
    other_key.write_text("not the shared secret")
    garbage = tmp_path / "junk" / "iris.onnx"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is no onnx model")
    for version, model, extra in (
        ("3", v2, ()),
        ("4", v2, ("--key-file", str(other_key))),
        ("5", garbage, ("--key-file", str(key_file))),
    ):
        assert publish(kafka, models, version, model, *extra).returncode == 0
    refusals = [app.wait_for_event("model-refused", count=n) for n in (1, 2, 3)]
    assert [r["version"] for r in refusals] == ["3", "4", "5"]
    assert "unsigned" in refusals[0]["reason"]
    assert "bad signature" in refusals[1]["reason"]
    assert "cannot be loaded" in refusals[2]["reason"]
    assert app.wait_for_event("model-applied")["version"] == "2"

    second = iris_features(30, seed=2)
    produce(kafka.bootstrap, source, json_records(second, "b"))
    answers = by_key(reader.read(60, timeout=60))
    rotated = expected_labels(v2, second)
    for i, label in enumerate(rotated):
        record = answers[f"b{i}".encode()]
        assert record.headers["kbuild-model-version"] == b"2"
        assert record.json()["label"] == [label]
    assert rotated != expected_labels(IRIS_MODELS / "iris.onnx", second)
    metrics = app.metrics()
    assert metrics['kbuild_kafka_model_info{version="2"}'] == 1
    assert metrics['kbuild_kafka_model_updates_total{result="applied"}'] == 1
    assert metrics['kbuild_kafka_model_updates_total{result="refused"}'] == 3
    assert app.stop() == 0

    # A replica starting now replays the newest model that verifies (2, not
    # the refused 3-5) before it answers its first record.
    produce(kafka.bootstrap, source, json_records(iris_features(10, seed=4), "c"))
    restarted = apps(root=app.root, env=env)
    replayed = restarted.wait_for_event("model-loaded")
    assert replayed["version"] == "2" and replayed["replay"] is True
    later = [r for r in reader.read(70, timeout=60) if r.key_bytes.startswith(b"c")]
    assert len(later) == 10 and {r.headers["kbuild-model-version"] for r in later} == {b"2"}


def test_scikit_learn_models_update_through_their_step_module(
    kafka: Broker, apps: StartFn, key_file: Path, tmp_path: Path
) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    # The model topic does not exist yet: the first publication creates it.
    # models.step is left out: the pipeline has one model step.
    source, sink, models = kafka.topic("in"), kafka.topic("out"), f"models-{uuid.uuid4().hex[:8]}"
    pipeline = iris_pipeline(
        {"source": {"topic": source}, "sink": {"topic": sink}, "models": {"topic": models}, "consumer": FAST_GROUP}
    )
    pipeline["steps"][0] = {
        "name": "model",
        "type": "sklearn",
        "model": "models/model/iris.joblib",
        "method": "predict_proba",
        "input": "features",
        "output": "probs",
    }
    app = apps(pipeline=pipeline, models={"model": IRIS_MODELS / "iris.joblib"}, env={"KBUILD_MODEL_KEY_FILE": str(key_file)})
    app.wait_for_event("partitions-assigned")
    data = load_iris()
    always_virginica = LogisticRegression(max_iter=200).fit(data.data, data.target)
    always_virginica.coef_ = np.zeros((3, 4))
    always_virginica.intercept_ = np.array([0.0, 0.0, 5.0])
    path = tmp_path / "v2" / "iris.joblib"
    path.parent.mkdir()
    joblib.dump(always_virginica, path)
    assert publish(kafka, models, "sk-2", path, "--key-file", str(key_file)).returncode == 0
    assert app.wait_for_event("model-applied")["version"] == "sk-2"
    produce(kafka.bootstrap, source, json_records(iris_features(10), "s"))
    outputs = Reader(kafka.bootstrap, sink).read(10, timeout=60)
    assert {r.json()["label"][0] for r in outputs} == {"virginica"}
    assert {r.headers["kbuild-model-version"] for r in outputs} == {b"sk-2"}


MAKINAGE_MODULE = '''
import numpy as np


def pre_transform(config):
    field = config["config"]["serve"]["input_field"]

    def _transform(event):
        if event.get("ignore"):
            return None
        return np.array([event[field]], dtype=np.float32)

    return _transform


def predict(model, config):
    def _predict(features):
        return model.predict(features)

    return _predict


def post_transform(config):
    field = config["config"]["serve"]["output_field"]

    def _transform(event, prediction):
        event[field] = str(prediction[0])
        return event

    return _transform
'''


def test_a_maki_nage_module_runs_unchanged(kafka: Broker, apps: StartFn) -> None:
    source, sink = kafka.topic("in"), kafka.topic("out")
    pipeline = iris_pipeline(
        {
            "source": {"topic": source},
            "sink": {"topic": sink},
            "consumer": FAST_GROUP,
            "transforms": {
                "code": "transforms/iris_mn.py",
                "pre_transform": "iris_mn:pre_transform",
                "predict": "iris_mn:predict",
                "post_transform": "iris_mn:post_transform",
                "config": {"config": {"serve": {"input_field": "x", "output_field": "species"}}},
            },
        }
    )
    del pipeline["outputs"]["probability"]
    app = apps(pipeline=pipeline, files={"transforms/iris_mn.py": MAKINAGE_MODULE})
    features = iris_features(12, seed=5)
    events = [(str(i).encode(), json.dumps({"id": i, "x": row.tolist()}).encode(), None) for i, row in enumerate(features)]
    produce(kafka.bootstrap, source, [*events, (b"skip", b'{"ignore": true}', None)])
    answers = Reader(kafka.bootstrap, sink).read(12, timeout=60)
    labels = expected_labels(IRIS_MODELS / "iris.onnx", features)
    assert sorted((r.json()["id"], r.json()["species"]) for r in answers) == list(enumerate(labels))
    wait_for(lambda: app.metrics()["kbuild_kafka_records_dropped_total"] == 1, 10, "the ignored event dropped")


def test_kill_9_mid_stream_then_restart_loses_nothing(kafka: Broker, apps: StartFn) -> None:
    source, sink = kafka.topic("in", 2), kafka.topic("out", 2)
    count = 1500
    app = apps({"source": {"topic": source}, "sink": {"topic": sink}}, sleep_ms=2)
    records = json_records(iris_features(count))
    produce(kafka.bootstrap, source, records)
    reader = Reader(kafka.bootstrap, sink)
    answered = len(reader.read(300, timeout=60))
    assert 300 <= answered < count, "killed mid-stream"
    app.stop(sig=9)
    restarted = apps(root=app.root)
    reader.read_keys({k for k, _, _ in records}, timeout=120)
    reader.settle(quiet=1.0)  # late duplicates, if any
    keys = Counter(r.key for r in reader.records)
    lost = {k for k, _, _ in records} - set(keys)
    duplicates = sum(n - 1 for n in keys.values())
    print(f"kill -9 after about {answered} of {count} answers: lost {len(lost)}, duplicates {duplicates}")
    assert not lost
    assert restarted.stop() == 0


def test_a_stalled_broker_loses_nothing(kafka: Broker, apps: StartFn) -> None:
    source, sink = kafka.topic("in"), kafka.topic("out")
    count = 800
    app = apps({"source": {"topic": source}, "sink": {"topic": sink}}, sleep_ms=3)
    records = json_records(iris_features(count, seed=7))
    produce(kafka.bootstrap, source, records)
    reader = Reader(kafka.bootstrap, sink)
    assert len(reader.read(150, timeout=60)) < count
    kafka.stall()
    try:
        time.sleep(10)
        assert app.status("/v2/health/live") == 200, "health answers while the broker is stalled"
    finally:
        kafka.resume()
    keys = Counter(r.key for r in reader.read_keys({k for k, _, _ in records}, timeout=120))
    lost = {k for k, _, _ in records} - set(keys)
    print(f"broker stalled for 10 s: lost {len(lost)}, duplicates {sum(n - 1 for n in keys.values())}")
    assert not lost
    assert app.process.poll() is None
    assert app.stop() == 0


def test_two_replicas_share_partitions_and_both_take_a_model_update(
    kafka: Broker, apps: StartFn, key_file: Path, tmp_path: Path
) -> None:
    source, sink, models = kafka.topic("in", 4), kafka.topic("out", 4), kafka.topic("models")
    section = {
        "source": {"topic": source},
        "sink": {"topic": sink},
        "models": {"topic": models, "step": "model", "built_in_version": "1"},
    }
    env = {"KBUILD_MODEL_KEY_FILE": str(key_file)}
    one = apps(section, env=env)
    two = apps(root=one.root, env=env)

    def split_evenly() -> bool:
        owned = []
        for app in (one, two):
            assigned = [e for e in app.events() if e["event"] == "partitions-assigned"]
            owned.append(set(assigned[-1]["partitions"]) if assigned else set())
        return len(owned[0]) == len(owned[1]) == 2 and not owned[0] & owned[1]

    wait_for(split_evenly, 30, "the four partitions split two and two")
    v2 = make_rotated_model(tmp_path / "v2" / "iris.onnx")
    assert publish(kafka, models, "2", v2, "--key-file", str(key_file)).returncode == 0
    for app in (one, two):
        assert app.wait_for_event("model-applied")["version"] == "2"
    produce(kafka.bootstrap, source, json_records(iris_features(200, seed=9)))
    answers = Reader(kafka.bootstrap, sink).read(200, timeout=60)
    assert len(by_key(answers)) == 200
    assert {r.headers["kbuild-model-version"] for r in answers} == {b"2"}
    counts = [app.metrics()["kbuild_kafka_records_in_total"] for app in (one, two)]
    assert all(n > 0 for n in counts) and sum(counts) >= 200, counts
