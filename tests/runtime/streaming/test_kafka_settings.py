"""The streaming pieces that need no broker: model messages, their assembly and
verification, offset bookkeeping, encodings, record handling, Maki Nage
transforms, settings, and what the compiler plans for a Kafka pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import load_spin
from kbuild.runtime.contract import runtime_files as manifest
from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.contract.kafka import parse_kafka
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from tests.helpers.kafka import IRIS_MODELS, iris_pipeline

# -- settings


def test_settings_apply_defaults_and_environment_overrides() -> None:
    settings = parse_kafka(
        {"source": {"topic": "a"}, "sink": {"topic": "b", "encoding": "msgpack"}, "client": {"linger.ms": 1}},
        "iris",
        {"KBUILD_KAFKA_BOOTSTRAP_SERVERS": "h1:9092,h2:9092"},
    )
    consumer = settings.consumer_settings()
    assert consumer["group.id"] == "iris" and consumer["enable.auto.commit"] is False
    assert consumer["bootstrap.servers"] == "h1:9092,h2:9092"
    assert settings.producer_settings()["linger.ms"] == 1
    assert settings.producer_settings()["enable.idempotence"] is True
    with pytest.raises(LoadError, match="serve.kafka.client.enable.auto.commit is set by kbuild"):
        parse_kafka({"source": {"topic": "a"}, "sink": {"topic": "b"}, "client": {"enable.auto.commit": True}}, "x", {})


# -- compiler side


def write_pipeline(folder: Path, kafka: dict[str, Any], extra: str = "") -> Path:
    (folder / "models").mkdir(exist_ok=True)
    (folder / "models" / "iris.onnx").write_bytes((IRIS_MODELS / "iris.onnx").read_bytes())
    doc = iris_pipeline(kafka)
    doc["steps"][0]["model"] = "models/iris.onnx"
    del doc["steps"][0]["options"]
    path = folder / "pipeline.yaml"
    path.write_text(json.dumps(doc) + extra)
    return path


def test_kafka_artifacts_carry_the_client_and_msgpack_only_where_needed(tmp_path: Path) -> None:
    spin = load_spin("cpu-linux-x86_64")
    plain = make_plan(load_pipeline(write_pipeline(tmp_path, {"source": {"topic": "a"}, "sink": {"topic": "b"}})), spin)
    assert plain.endpoints == ("http", "kafka")
    names = [r.split(">")[0].split("=")[0] for r in plain.requirements]
    assert "confluent-kafka" in names and "orjson" in names and "msgpack" not in names
    packed = make_plan(
        load_pipeline(
            write_pipeline(tmp_path, {"source": {"topic": "a", "encoding": "msgpack"}, "sink": {"topic": "b"}})
        ),
        spin,
    )
    assert any(r.startswith("msgpack") for r in packed.requirements)
    doc = json.loads((tmp_path / "pipeline.yaml").read_text())
    del doc["serve"]
    (tmp_path / "pipeline.yaml").write_text(json.dumps(doc))
    http_only = make_plan(load_pipeline(tmp_path / "pipeline.yaml"), spin)
    assert not any(r.startswith(("confluent-kafka", "orjson", "msgpack")) for r in http_only.requirements)
    files = manifest.files_for(["onnx"], ["kafka"])
    assert "kbuild/runtime/transports/kafka.py" in files and "kbuild/runtime/transports/http.py" in files
    assert not any("streaming" in f for f in manifest.files_for(["onnx"], ["http"]))


def test_the_manifest_ships_every_streaming_module() -> None:
    folder = Path(manifest.__file__).parent.parent / "streaming"
    shipped = set(manifest.files_for([], ["kafka"]))
    for module in folder.glob("*.py"):
        assert f"kbuild/runtime/streaming/{module.name}" in shipped


@pytest.mark.parametrize(
    "serve, path, phrase",
    [
        ({"Kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}}}, "$.serve.Kafka", "did you mean 'kafka'?"),
        ({"kafka": {"source": {"topic": "a"}}}, "$.serve.kafka", "missing required field 'sink'"),
        (
            {"kafka": {"source": {"topic": "a b"}, "sink": {"topic": "b"}}},
            "$.serve.kafka.source.topic",
            "Kafka topic name",
        ),
        (
            {"kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}, "consumer": {"group.id": "x"}}},
            '$.serve.kafka.consumer["group.id"]',
            "set serve.kafka.group_id instead",
        ),
        (
            {"kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}, "client": {"enable.auto.commit": True}}},
            '$.serve.kafka.client["enable.auto.commit"]',
            "at-least-once",
        ),
        (
            {"kafka": {"source": {"topic": "a", "encoding": "raw"}, "sink": {"topic": "b"}}},
            "$.serve.kafka.source.encoding",
            "BYTES",
        ),
        (
            {"kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}, "models": {"topic": "m", "step": "labels"}}},
            "$.serve.kafka.models.step",
            "has no model to update",
        ),
        (
            {"kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}, "transforms": {"code": "nope.py"}}},
            "$.serve.kafka.transforms.code",
            "code not found",
        ),
    ],
)
def test_kafka_mistakes_name_the_field(tmp_path: Path, serve: dict[str, Any], path: str, phrase: str) -> None:
    pipeline = write_pipeline(tmp_path, {"source": {"topic": "a"}, "sink": {"topic": "b"}})
    doc = json.loads(pipeline.read_text())
    doc["serve"] = serve
    pipeline.write_text(json.dumps(doc))
    with pytest.raises(SpecError) as error:
        load_pipeline(pipeline)
    assert any(p.path == path and phrase in p.message for p in error.value.problems), error.value.render()


def test_a_pipeline_gets_another_model_through_its_step_module(tmp_path: Path) -> None:
    import onnx

    root = tmp_path / "app"
    (root / "models" / "model").mkdir(parents=True)
    built_in = (IRIS_MODELS / "iris.onnx").read_bytes()
    (root / "models" / "model" / "iris.onnx").write_bytes(built_in)
    doc = iris_pipeline({"source": {"topic": "a"}, "sink": {"topic": "b"}})
    doc["steps"][0]["sha256"] = hashlib.sha256(built_in).hexdigest()  # of the built-in model only
    pipeline = PipelineRunner.load(root, PipelineSpec.from_json(doc))
    other = tmp_path / "elsewhere" / "iris.onnx"
    other.parent.mkdir()
    other.write_bytes(b"not onnx")
    with pytest.raises(LoadError, match="step 'model' \\(onnx\\): cannot load"):
        pipeline.with_model("model", other)
    model = onnx.load_from_string(built_in)
    model.doc_string = "another version"
    other.write_bytes(model.SerializeToString())
    swapped = pipeline.with_model("model", other)
    x = {"features": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)}
    assert swapped is not pipeline
    assert swapped.run(x)["label"].tolist() == pipeline.run(x)["label"].tolist() == ["setosa"]  # type: ignore[index]


def test_the_compiler_ships_maki_nage_code_with_the_artifact(tmp_path: Path) -> None:
    from kbuild.render.artifact_root import render_root

    pipeline = write_pipeline(tmp_path, {"source": {"topic": "a"}, "sink": {"topic": "b"}})
    (tmp_path / "mn").mkdir()
    (tmp_path / "mn" / "features.py").write_text("def pre_transform(config):\n    return lambda e: e\n")
    doc = json.loads(pipeline.read_text())
    doc["serve"]["kafka"]["transforms"] = {"code": "mn/features.py", "pre_transform": "features:pre_transform"}
    pipeline.write_text(json.dumps(doc))
    root = tmp_path / "root"
    render_root(make_plan(load_pipeline(pipeline), load_spin("cpu-linux-x86_64")), root, {})
    written = json.loads((root / "app" / "pipeline.json").read_text())
    assert written["serve"]["kafka"]["transforms"]["code"] == "transforms/features.py"
    assert (root / "app" / "transforms" / "features.py").read_text().startswith("def pre_transform")
    assert (root / "site" / "kbuild" / "runtime" / "transports" / "kafka.py").is_file()


def test_the_model_step_is_found_in_the_pipeline_spec_and_in_branches() -> None:
    from kbuild.runtime.contract.step_types import walk
    from kbuild.runtime.transports.kafka import _model_step

    spec = PipelineSpec.from_json(iris_pipeline({"source": {"topic": "a"}, "sink": {"topic": "b"}}))
    assert _model_step(walk(spec.steps), None) == "model"  # spec.steps is a tuple
    nested = [
        {
            "name": "route",
            "type": "switch",
            "input": "r",
            "cases": {"x": [{"name": "m2", "type": "onnx", "model": "m"}]},
        }
    ]
    assert [s["name"] for s in walk(nested)] == ["route", "m2"]
