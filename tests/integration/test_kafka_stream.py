"""The Kafka transport against a real Kafka-protocol broker (Tansu, started by
the `kafka` fixture), with confluent-kafka producers and consumers on this side.

Each test runs artifact roots (`python -m kbuild.runtime --root ROOT serve`) on
topics of its own. Group timeouts are short so that joins and rebalances take
about a second and a half.
"""

from __future__ import annotations

import msgpack

from tests.helpers.kafka import (
    FAST_GROUP,
    IRIS_MODELS,
    Reader,
    expected_labels,
    iris_features,
    iris_pipeline,
    json_records,
    produce,
)
from tests.helpers.kafka_broker import Broker
from tests.helpers.streams import BLOAT, StartFn, by_key, wait_for


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
    assert "kbuild_kafka_consumer_lag_overall" in metrics
    # everything answered and committed: the group's lag (the 104 records produced less the offsets a
    # client we did not write reads as committed) is what the replica, holding both partitions, reports
    from confluent_kafka import Consumer, TopicPartition

    def group_lag() -> int:
        probe = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "iris"})
        try:
            done = probe.committed([TopicPartition(source, p) for p in (0, 1)], timeout=10)
            return 104 - sum(max(tp.offset, 0) for tp in done)
        finally:
            probe.close()

    def commit_lags() -> tuple[float | None, ...]:
        seen = app.metrics()
        return tuple(seen.get(f'kbuild_kafka_consumer_commit_lag{{topic="{source}",partition="{p}"}}') for p in (0, 1))

    wait_for(lambda: commit_lags() == (0, 0) and group_lag() == 0, 20, "the replica's commit lag to equal the group's")
    assert app.stop() == 0

    # Stopped cleanly: everything answered is committed.
    group = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "iris"})
    committed = group.committed([TopicPartition(source, p) for p in (0, 1)], timeout=10)
    ends = [group.get_watermark_offsets(TopicPartition(source, p), timeout=10)[1] for p in (0, 1)]
    group.close()
    assert sum(tp.offset for tp in committed) == 104 >= sum(ends)


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
        {
            "name": "bloat",
            "type": "python",
            "function": "bloat:make",
            "code": "code/bloat/bloat.py",
            "outputs": {"label": "label"},
        }
    )
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
