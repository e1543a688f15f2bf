"""The Kafka transport against a real Kafka-protocol broker (Tansu, started by
the `kafka` fixture), with confluent-kafka producers and consumers on this side.

Each test runs artifact roots (`python -m kbuild.runtime --root ROOT serve`) on
topics of its own. Group timeouts are short so that joins and rebalances take
about a second and a half.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from tests.helpers.kafka import (
    FAST_GROUP,
    IRIS_MODELS,
    Reader,
    expected_labels,
    iris_features,
    iris_pipeline,
    json_records,
    make_rotated_model,
    produce,
)
from tests.helpers.kafka_broker import Broker
from tests.helpers.streams import StartFn, by_key, publish, wait_for


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
    app = apps(
        pipeline=pipeline, models={"model": IRIS_MODELS / "iris.joblib"}, env={"KBUILD_MODEL_KEY_FILE": str(key_file)}
    )
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


MAKINAGE_MODULE = """
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
"""


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
    events = [
        (str(i).encode(), json.dumps({"id": i, "x": row.tolist()}).encode(), None) for i, row in enumerate(features)
    ]
    produce(kafka.bootstrap, source, [*events, (b"skip", b'{"ignore": true}', None)])
    answers = Reader(kafka.bootstrap, sink).read(12, timeout=60)
    labels = expected_labels(IRIS_MODELS / "iris.onnx", features)
    assert sorted((r.json()["id"], r.json()["species"]) for r in answers) == list(enumerate(labels))
    wait_for(lambda: app.metrics()["kbuild_kafka_records_dropped_total"] == 1, 10, "the ignored event dropped")
