"""One pipeline, every transport, every carrier: the same rows sent over HTTP
JSON and HTTP binary tensors (tritonclient), gRPC (tritonclient), Kafka
(confluent-kafka, through a real broker) and MQTT (mosquitto_pub/sub, through
a real mosquitto) get identical answers, from the zipapp and from the image.

Two pipelines: the plain iris ONNX one, and the wine graph (an ensemble, a
switch, a split) without its default case, so that a row no case takes gets
each transport's client error: 400, INVALID_ARGUMENT, a dead letter, the
error topic; the server goes on answering."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers.build import EXAMPLES, build_example, free_port, post_json, wait_ready
from tests.helpers.docker_engine import build_image, built, docker_cli, remove_image, session_tag
from tests.helpers.kafka import Reader, produce
from tests.helpers.kafka_broker import Broker
from tests.helpers.mqtt_broker import Mosquitto
from tests.runtime.transports.test_mqtt import publish, received, subscribe

WINE = json.loads((EXAMPLES / "wine-graph" / "heldout.json").read_text())["inputs"]
ROWS = 6


@dataclass(frozen=True)
class Case:
    example: str
    model: str  # the OIP model name
    inputs: dict[str, list[Any]]  # column -> one value per row
    datatypes: dict[str, str]
    outputs: tuple[str, ...]
    refused: dict[str, list[Any]]  # a request each transport must refuse as the client's error
    because: str  # what the error says


CASES = {
    "plain": Case(
        "iris",
        "iris",
        {
            "features": [
                [5.1, 3.5, 1.4, 0.2],
                [6.7, 3.0, 5.2, 2.3],
                [5.9, 3.0, 4.2, 1.5],
                [6.3, 2.8, 5.1, 1.5],
                [4.9, 3.0, 1.4, 0.2],
                [7.2, 3.6, 6.1, 2.5],
            ]
        },
        {"features": "FP32"},
        ("label", "probability"),
        {"features": [[5.1, 3.5, 1.4]]},
        "expected shape [-1, 4], got [1, 3]",
    ),
    "graph": Case(
        "wine-graph",
        "wine-graph",
        {
            "features": WINE["features"][:ROWS],
            "region": ["eu", "us", "eu", "us", "eu", "us"],
            "customer": [f"customer-{i}" for i in range(ROWS)],
        },
        {"features": "FP32", "region": "BYTES", "customer": "BYTES"},
        ("cultivar", "probability", "variant"),
        {"features": WINE["features"][:1], "region": ["mars"], "customer": ["c"]},
        "no case for region = 'mars'",
    ),
}


def _serve_everywhere(case: Case, kafka: Broker) -> dict[str, Any]:
    """The example's pipeline serving HTTP, gRPC, Kafka (on topics of its own) and MQTT at once."""
    document = yaml.safe_load((EXAMPLES / case.example / "pipeline.yaml").read_text())
    if case.example == "wine-graph":  # a row no case takes: the client's error
        route = next(s for s in document["steps"] if s.get("type") == "switch")
        del route["default"]
    topic = f"{case.example}-{uuid.uuid4().hex[:8]}"
    serve = {
        "http": {"port": 8080},
        "grpc": {"port": 8081},
        "kafka": {
            "group_id": topic,
            "source": {"topic": kafka.topic(f"{topic}-in")},
            "sink": {"topic": kafka.topic(f"{topic}-out")},
            "dead_letter": {"topic": kafka.topic(f"{topic}-dead")},
            "consumer": {"session.timeout.ms": 6000},
        },
        "mqtt": {
            "request_topic": f"{topic}/requests/+",
            "response_topic": f"{topic}/responses",
            "error_topic": f"{topic}/errors",
            "qos": 1,
        },
    }
    return {"steps": document["steps"], "serve": serve, "samples": []}


@dataclass(frozen=True)
class Artifact:
    case: Case
    serve: dict[str, Any]
    zipapp: Path
    pipeline: Path


@pytest.fixture(scope="module", params=sorted(CASES))
def artifact(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, kafka: Broker) -> Artifact:
    case = CASES[request.param]
    tmp = tmp_path_factory.mktemp(f"conformance-{request.param}")
    changes = _serve_everywhere(case, kafka)
    made = build_example(tmp, "everywhere.yaml", derive=("pipeline.yaml", changes), example=case.example)
    return Artifact(case, changes["serve"], made.artifact, made.pipeline)


@dataclass(frozen=True)
class Running:
    http: int
    grpc: int


@pytest.fixture(params=["zipapp", "image"])
def running(
    request: pytest.FixtureRequest, artifact: Artifact, kafka: Broker, mosquitto: Mosquitto, tmp_path: Path
) -> Iterator[Running]:
    http, grpc = free_port(), free_port()
    env = {
        "KBUILD_HTTP_PORT": str(http),
        "KBUILD_GRPC_PORT": str(grpc),
        "KBUILD_MQTT_BROKER": mosquitto.address,
        "KBUILD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
    }
    if request.param == "zipapp":
        import os

        with subprocess.Popen(
            [sys.executable, str(artifact.zipapp), "serve"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            try:
                wait_ready(http, proc, timeout=120)
                yield Running(http, grpc)
            finally:
                proc.terminate()
                assert proc.wait(60) == 0
        return
    base_image = request.getfixturevalue("base_image")
    tag = session_tag(f"conformance-{artifact.case.example}")
    image = built(tmp_path, artifact.pipeline, build_image(tmp_path, artifact.pipeline, base_image, tag), tag)
    started = docker_cli(
        "run", "-d", "--rm", "--network", "host", *(f"--env={k}={v}" for k, v in env.items()), image.tag
    )
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        wait_ready(http, timeout=120)
        yield Running(http, grpc)
    finally:
        docker_cli("stop", "-t", "30", container)
        remove_image(tag, keep_cache=True)


def _columns(case: Case, inputs: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    return {
        name: np.array(values, dtype=np.float32)
        if case.datatypes[name] == "FP32"
        else np.array([v.encode() for v in values], dtype=object)
        for name, values in inputs.items()
    }


def _normal(case: Case, answer: dict[str, Any]) -> dict[str, list[Any]]:
    """Outputs as plain lists: text as str, numbers as float32."""
    out: dict[str, list[Any]] = {}
    for name in case.outputs:
        values = answer[name]
        values = values.tolist() if isinstance(values, np.ndarray) else list(values)
        out[name] = [
            v.decode() if isinstance(v, bytes) else float(np.float32(v)) if isinstance(v, float) else v for v in values
        ]
    return out


def over_http(case: Case, port: int, inputs: dict[str, list[Any]], binary: bool) -> dict[str, Any]:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    tensors = []
    for name, array in _columns(case, inputs).items():
        tensor = triton_http.InferInput(name, list(array.shape), case.datatypes[name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    wanted = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in case.outputs]
    result = client.infer(case.model, tensors, outputs=wanted)
    return {n: result.as_numpy(n) for n in case.outputs}


def over_grpc(case: Case, port: int, inputs: dict[str, list[Any]]) -> dict[str, Any]:
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensors = []
        for name, array in _columns(case, inputs).items():
            tensor = triton_grpc.InferInput(name, list(array.shape), case.datatypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(case.model, tensors)
        return {n: result.as_numpy(n) for n in case.outputs}
    finally:
        client.close()


def over_kafka(artifact: Artifact, kafka: Broker, inputs: dict[str, list[Any]], key: bytes) -> dict[str, Any]:
    topics = artifact.serve["kafka"]
    produce(kafka.bootstrap, topics["source"]["topic"], [(key, json.dumps(inputs).encode(), None)])
    reader = Reader(kafka.bootstrap, topics["sink"]["topic"])
    try:
        [record] = [r for r in reader.read_keys({key}, timeout=60) if r.key == key]
        answer: dict[str, Any] = record.json()
        return answer
    finally:
        reader.close()


def over_mqtt(artifact: Artifact, mosquitto: Mosquitto, inputs: dict[str, list[Any]], topic: str) -> dict[str, Any]:
    settings = artifact.serve["mqtt"]
    answers = subscribe(mosquitto, settings[topic], 1)
    publish(mosquitto, settings["request_topic"].replace("+", "conformance"), json.dumps({"id": 1, **inputs}))
    [answer] = received(answers)
    assert answer.get("id") == 1, answer
    result: dict[str, Any] = answer
    return result


def test_every_transport_gives_the_same_answers(
    artifact: Artifact, running: Running, kafka: Broker, mosquitto: Mosquitto
) -> None:
    case = artifact.case
    answers = {
        "http-json": over_http(case, running.http, case.inputs, binary=False),
        "http-binary": over_http(case, running.http, case.inputs, binary=True),
        "grpc": over_grpc(case, running.grpc, case.inputs),
        "kafka": over_kafka(artifact, kafka, case.inputs, uuid.uuid4().hex.encode()),
        "mqtt": over_mqtt(artifact, mosquitto, case.inputs, "response_topic"),
    }
    normal = {transport: _normal(case, answer) for transport, answer in answers.items()}
    reference = normal["http-json"]
    assert all(len(values) == ROWS for values in reference.values()), reference
    for transport, answer in normal.items():
        assert answer == reference, (transport, answer, reference)


def test_a_row_no_case_takes_or_of_the_wrong_shape_is_each_transports_client_error(
    artifact: Artifact, running: Running, kafka: Broker, mosquitto: Mosquitto
) -> None:
    case = artifact.case
    expected = case.because
    status, body = post_json(running.http, "/predict", case.refused)
    assert status == 400 and expected in body["error"], body

    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        over_grpc(case, running.grpc, case.refused)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and expected in refused.value.message()

    key = uuid.uuid4().hex.encode()
    produce(
        kafka.bootstrap, artifact.serve["kafka"]["source"]["topic"], [(key, json.dumps(case.refused).encode(), None)]
    )
    dead = Reader(kafka.bootstrap, artifact.serve["kafka"]["dead_letter"]["topic"])
    try:
        [letter] = [r for r in dead.read_keys({key}, timeout=60) if r.key == key]
    finally:
        dead.close()
    assert expected.encode() in letter.headers["kbuild-error"], letter.headers

    error = over_mqtt(artifact, mosquitto, case.refused, "error_topic")
    assert expected in json.dumps(error), error
    # and the server goes on answering, on every transport
    assert _normal(case, over_grpc(case, running.grpc, case.inputs)) == _normal(
        case, over_http(case, running.http, case.inputs, binary=True)
    )
