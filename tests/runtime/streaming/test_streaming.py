"""The streaming pieces that need no broker: model messages, their assembly and
verification, offset bookkeeping, encodings, record handling, Maki Nage
transforms, settings, and what the compiler plans for a Kafka pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from kbuild.errors import SpecError
from kbuild.plan import make_plan
from kbuild.runtime import manifest
from kbuild.runtime.errors import LoadError
from kbuild.runtime.pipeline import Pipeline, PipelineSpec
from kbuild.runtime.settings.kafka import TransformsConfig, parse_kafka
from kbuild.runtime.streaming.codec import codec
from kbuild.runtime.streaming.model_assembly import Assembler, Refused, Verifier
from kbuild.runtime.streaming.model_message import (
    Manifest,
    ModelMessageError,
    parse_chunk,
    read_key,
    sha256_of,
    sign,
    split,
)
from kbuild.runtime.streaming.offsets import OffsetBook
from kbuild.runtime.streaming.records import RecordError, pipeline_handler
from kbuild.runtime.streaming.transforms import transforms_handler
from kbuild.spec import load_pipeline
from kbuild.spins import load_spin
from tests.helpers.kafka import IRIS_MODELS, iris_pipeline

KEY = b"secret"


def manifest_for(data: bytes, chunk: int, version: str = "2", published: int = 1000) -> tuple[Manifest, list[bytes]]:
    chunks = split(data, chunk)
    return (
        Manifest(
            id=hashlib.md5(data + version.encode()).hexdigest(),
            version=version,
            name="model.onnx",
            sha256=sha256_of(chunks),
            size=len(data),
            chunks=len(chunks),
            published_at_ms=published,
        ),
        chunks,
    )


# -- model messages


def test_manifest_round_trips_through_headers_and_signature_covers_it() -> None:
    m, chunks = manifest_for(b"x" * 2500, 1000)
    assert m.chunks == 3 and [len(c) for c in chunks] == [1000, 1000, 500]
    signature = sign(KEY, m)
    chunk = parse_chunk(m.headers(2, signature))
    assert chunk.manifest == m and chunk.index == 2 and chunk.signature == signature
    altered = Manifest(**{**m.__dict__, "version": "3"})
    assert sign(KEY, altered) != signature


@pytest.mark.parametrize(
    "headers, phrase",
    [
        ([], "not a kbuild model message"),
        ([("kbuild-model-format", b"9")], "format '9'"),
        ([("kbuild-model-format", b"1")], "without kbuild-model-id"),
    ],
)
def test_malformed_model_messages_are_named(headers: list[tuple[str, bytes]], phrase: str) -> None:
    with pytest.raises(ModelMessageError, match=phrase):
        parse_chunk(headers)


def test_a_chunk_index_outside_the_model_is_refused() -> None:
    m, _ = manifest_for(b"abc", 10)
    headers = [(k, v) for k, v in m.headers(0, None) if k != "kbuild-model-chunk"]
    with pytest.raises(ModelMessageError, match="chunk 5 of a model in 1"):
        parse_chunk([*headers, ("kbuild-model-chunk", b"5")])


def test_key_files_ignore_a_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("secret\n")
    (tmp_path / "b").write_bytes(b"secret")
    assert read_key(tmp_path / "a") == read_key(tmp_path / "b") == KEY
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_key(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        read_key(tmp_path / "missing")


# -- assembly and verification


def feed_all(assembler: Assembler, m: Manifest, chunks: list[bytes], signature: str | None) -> Any:
    result = None
    for i, data in enumerate(chunks):
        result = assembler.feed(parse_chunk(m.headers(i, signature)), data, 100 + i)
    return result


def test_chunks_assemble_into_the_verified_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    m, chunks = manifest_for(data, 1000)
    done = feed_all(Assembler(tmp_path, Verifier(KEY, False)), m, chunks, sign(KEY, m))
    assert done.path.read_bytes() == data and done.path.name == "model.onnx"
    assert done.offset == 100 + len(chunks) - 1


@pytest.mark.parametrize(
    "key, allow_unsigned, signature, reason",
    [
        (KEY, False, None, "unsigned"),
        (KEY, False, "0" * 64, "bad signature"),
        (None, False, "sign", "no key"),
    ],
)
def test_refused_models_are_refused_at_the_first_chunk(
    tmp_path: Path, key: bytes | None, allow_unsigned: bool, signature: str | None, reason: str
) -> None:
    m, chunks = manifest_for(b"y" * 3000, 1000)
    if signature == "sign":
        signature = sign(KEY, m)
    assembler = Assembler(tmp_path, Verifier(key, allow_unsigned))
    with pytest.raises(Refused, match=reason):
        assembler.feed(parse_chunk(m.headers(0, signature)), chunks[0], 0)
    assert not any(tmp_path.iterdir())  # nothing of it was written
    # its later chunks are skipped quietly: one refusal per model
    assert assembler.feed(parse_chunk(m.headers(1, signature)), chunks[1], 1) is None


def test_unsigned_models_pass_only_when_allowed(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"z" * 10, 4)
    assert feed_all(Assembler(tmp_path, Verifier(None, True)), m, chunks, None) is not None


def test_altered_content_and_gaps_are_refused(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"w" * 3000, 1000)
    signature = sign(KEY, m)
    assembler = Assembler(tmp_path / "a", Verifier(KEY, False))
    with pytest.raises(Refused, match="does not match its sha256"):
        feed_all(assembler, m, [chunks[0], chunks[1], b"X" * 1000], signature)
    assembler = Assembler(tmp_path / "b", Verifier(KEY, False))
    assembler.feed(parse_chunk(m.headers(0, signature)), chunks[0], 0)
    with pytest.raises(Refused, match="chunk 2 arrived where chunk 1 was due"):
        assembler.feed(parse_chunk(m.headers(2, signature)), chunks[2], 2)


def test_a_chunk_whose_start_was_not_read_is_ignored(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"v" * 3000, 1000)
    assembler = Assembler(tmp_path, Verifier(KEY, False))
    assert assembler.feed(parse_chunk(m.headers(1, sign(KEY, m))), chunks[1], 5) is None


# -- offsets


class Record:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def key(self) -> bytes:
        return self._key


def test_offsets_become_committable_only_when_settled() -> None:
    book = OffsetBook()
    book.consumed.update({0: 4, 1: 2})  # the last offsets consumed
    assert book.unsettled and book.committable() == []  # consumed is not answered
    book.outputs, book.dead_letters = 7, 1
    assert book.settle() == (7, 1)
    assert not book.unsettled
    assert sorted(book.committable()) == [(0, 5), (1, 3)]
    assert book.committable() == []  # sent already
    book.commit_failed(1, 3)
    assert book.committable() == [(1, 3)]  # sent again
    book.consumed[0] = 9
    book.revoke([0])
    book.settle()
    assert book.committable() == []  # the next owner answers partition 0 again


def test_a_revoked_partition_commits_alone() -> None:
    book = OffsetBook()
    book.consumed.update({0: 1, 1: 2})
    book.settle()
    assert book.committable([1]) == [(1, 3)]
    assert book.committable() == [(0, 2)]  # still due, not marked sent


def test_a_refused_output_finds_its_input_until_settled() -> None:
    book = OffsetBook()
    records = [Record(b"a"), Record(b"b"), Record(b"c")]
    book.add(records, [b"out", None, b"out"])
    assert book.find(b"c", b"out") is records[2]
    assert book.find(b"b", b"out") is None  # dropped: it had no output
    book.settle()
    assert book.find(b"c", b"out") is None


# -- encodings and records


def iris_spec(**kafka: Any) -> PipelineSpec:
    return PipelineSpec.from_json(iris_pipeline(kafka or {"source": {"topic": "a"}, "sink": {"topic": "b"}}))


def echo_run(inputs: dict[str, Any]) -> dict[str, Any]:
    rows = inputs["features"].shape[0]
    return {"label": np.array(["setosa"] * rows, dtype=object), "probability": np.ones(rows, np.float32)}


def test_json_and_msgpack_records() -> None:
    spec = iris_spec()
    handle = pipeline_handler(spec, codec("json"), codec("msgpack"), echo_run)
    out = handle(json.dumps({"features": [[1, 2, 3, 4]]}).encode())
    assert out is not None and msgpack.unpackb(out) == {"label": ["setosa"], "probability": [1.0]}
    with pytest.raises(RecordError) as error:
        handle(b'{"features": [[1, 2]]}')
    assert error.value.stage == "decode" and "expected shape [-1, 4]" in error.value.message
    with pytest.raises(RecordError, match="no value"):
        handle(None)


def test_failures_inside_the_pipeline_name_the_stage() -> None:
    def broken(inputs: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("boom")

    handle = pipeline_handler(iris_spec(), codec("json"), codec("json"), broken)
    with pytest.raises(RecordError) as error:
        handle(b'{"features": [1, 2, 3, 4]}')
    assert error.value.stage == "pipeline" and "ZeroDivisionError: boom" in error.value.message


def test_raw_records_are_the_bytes_of_one_input_and_output() -> None:
    spec = PipelineSpec.from_json(
        {
            "kbuild": 1,
            "name": "echo",
            "inputs": {"text": {"datatype": "BYTES", "shape": [-1]}},
            "outputs": {"upper": {"datatype": "BYTES", "shape": [-1]}},
            "steps": [],
        }
    )
    handle = pipeline_handler(
        spec, codec("raw"), codec("raw"), lambda v: {"upper": np.array([v["text"][0].upper()], dtype=object)}
    )
    assert handle(b"\x00abc") == b"\x00ABC"
    with pytest.raises(LoadError, match="one BYTES input"):
        pipeline_handler(iris_spec(), codec("raw"), codec("json"), echo_run)


MAKINAGE = '''
import numpy as np

def pre_transform(config):
    field = config['config']['serve']['input_field']

    def _transform(event):
        if event.get('skip'):
            return None
        return np.array([event[field]], dtype=np.float32)

    return _transform


def predict(model, config):
    ratio = config['config']['serve']['ratio']

    def _predict(features):
        return (model.predict(features), float(features[0][0]) * ratio)

    return _predict


def post_transform(config):
    field = config['config']['serve']['output_field']

    def _transform(event, prediction):
        event[field] = {'label': prediction[0][0], 'scaled': prediction[1]}
        return event

    return _transform
'''


def test_maki_nage_functions_run_unchanged(tmp_path: Path) -> None:
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "mn_unit.py").write_text(MAKINAGE)
    spec = PipelineSpec.from_json(
        {**iris_pipeline({"source": {"topic": "a"}, "sink": {"topic": "b"}}), "outputs": {"label": {"datatype": "BYTES", "shape": [-1]}}}
    )
    served: list[object] = [object()]
    calls: list[object] = []

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(served[0])
        return {"label": np.array(["virginica"], dtype=object)}

    handle = transforms_handler(
        tmp_path,
        TransformsConfig(
            code="transforms/mn_unit.py",
            pre_transform="mn_unit:pre_transform",
            predict="mn_unit:predict",
            post_transform="mn_unit:post_transform",
            config={"config": {"serve": {"input_field": "x", "output_field": "y", "ratio": 2}}},
        ),
        codec("json"),
        codec("json"),
        spec,
        run,
        lambda: served[0],
    )
    out = handle(b'{"id": 7, "x": [6.7, 3.0, 5.2, 2.3]}')
    assert out is not None and json.loads(out) == {
        "id": 7,
        "x": [6.7, 3.0, 5.2, 2.3],
        "y": {"label": "virginica", "scaled": pytest.approx(13.4)},
    }
    assert handle(b'{"skip": true}') is None  # None skips, as in Maki Nage
    with pytest.raises(RecordError) as error:
        handle(b'{"id": 8}')
    assert error.value.stage == "pipeline" and "KeyError" in error.value.message


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
        parse_kafka(
            {"source": {"topic": "a"}, "sink": {"topic": "b"}, "client": {"enable.auto.commit": True}}, "x", {}
        )


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
        load_pipeline(write_pipeline(tmp_path, {"source": {"topic": "a", "encoding": "msgpack"}, "sink": {"topic": "b"}})),
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
    folder = Path(manifest.__file__).parent / "streaming"
    shipped = set(manifest.files_for([], ["kafka"]))
    for module in folder.glob("*.py"):
        assert f"kbuild/runtime/streaming/{module.name}" in shipped


@pytest.mark.parametrize(
    "serve, path, phrase",
    [
        ({"Kafka": {"source": {"topic": "a"}, "sink": {"topic": "b"}}}, "$.serve.Kafka", "did you mean 'kafka'?"),
        ({"kafka": {"source": {"topic": "a"}}}, "$.serve.kafka", "missing required field 'sink'"),
        ({"kafka": {"source": {"topic": "a b"}, "sink": {"topic": "b"}}}, "$.serve.kafka.source.topic", "Kafka topic name"),
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
    pipeline = Pipeline.load(root, PipelineSpec.from_json(doc))
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
    from kbuild.render import render_root

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
