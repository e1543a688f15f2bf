"""The Kafka transport against a real Kafka-protocol broker (Tansu, started by
the `kafka` fixture), with confluent-kafka producers and consumers on this side.

Each test runs artifact roots (`python -m kbuild.runtime --root ROOT serve`) on
topics of its own. Group timeouts are short so that joins and rebalances take
about a second and a half.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.helpers.kafka import (
    Reader,
    iris_features,
    json_records,
    make_rotated_model,
    produce,
)
from tests.helpers.kafka_broker import Broker
from tests.helpers.streams import StartFn, by_key, publish, wait_for


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
