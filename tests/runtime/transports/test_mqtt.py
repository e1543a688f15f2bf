"""The MQTT transport against a real mosquitto: requests from mosquitto_pub
answered to mosquitto_sub, MQTT 5 request/response with correlation data from
paho, malformed requests sent to the error topic while serving goes on, and a
broker restart survived (not ready while it is away)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers.mqtt_broker import Mosquitto
from tests.helpers.runtime import SETOSA, VIRGINICA, Server, iris_pipeline, subprocess_env, write_root

TIMEOUT_S = 30


@pytest.fixture
def served(mosquitto: Mosquitto, tmp_path: Path, models: dict[str, Path]) -> Iterator[Server]:
    spec = iris_pipeline(
        serve={
            "mqtt": {
                "broker": "localhost:1",
                "request_topic": "iris/requests/+",
                "response_topic": "iris/responses",
                "error_topic": "iris/errors",
                "qos": 1,
            },
            "batching": {"max_batch_size": 8, "max_latency_ms": 2},
        }
    )
    root = write_root(tmp_path / "root", spec, models={"model": models["onnx"]})
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_MQTT_BROKER=mosquitto.address)).started()
    wait_ready(srv)
    yield srv
    assert srv.terminate() == 0


def ready(srv: Server) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(srv: Server, want: bool = True) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while ready(srv) != want:
        assert time.monotonic() < deadline, f"readiness did not become {want}: {srv.stderr_rest()}"
        time.sleep(0.1)


def subscribe(mosquitto: Mosquitto, topic: str, count: int, *options: str) -> subprocess.Popen[str]:
    """mosquitto_sub for `count` messages; `options` such as --cafile or -u."""
    program = shutil.which("mosquitto_sub")
    assert program is not None
    proc = subprocess.Popen(
        [
            program,
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-t",
            topic,
            "-C",
            str(count),
            "-q",
            "1",
            "-W",
            str(TIMEOUT_S),
            *options,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # subscribed before anything is published
    return proc


def publish(mosquitto: Mosquitto, topic: str, payload: str | bytes, *options: str) -> None:
    program = shutil.which("mosquitto_pub")
    assert program is not None
    subprocess.run(
        [program, "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", topic, "-q", "1", "-s", *options],
        input=payload if isinstance(payload, bytes) else payload.encode(),
        check=True,
        timeout=TIMEOUT_S,
    )


def received(proc: subprocess.Popen[str]) -> list[Any]:
    out, _ = proc.communicate(timeout=TIMEOUT_S + 5)
    return [json.loads(line) for line in out.splitlines() if line]


def test_mosquitto_pub_requests_are_answered_with_their_ids(mosquitto: Mosquitto, served: Server) -> None:
    answers = subscribe(mosquitto, "iris/responses", 2)
    publish(mosquitto, "iris/requests/a", json.dumps({"id": "r1", "features": [SETOSA]}))
    publish(mosquitto, "iris/requests/b", json.dumps({"id": "r2", "features": [VIRGINICA]}))
    by_id = {a["id"]: a for a in received(answers)}
    assert by_id["r1"]["label"] == ["setosa"] and by_id["r2"]["label"] == ["virginica"]


def test_mqtt5_response_topic_and_correlation_data(mosquitto: Mosquitto, served: Server) -> None:
    got: list[tuple[str, bytes, bytes | None]] = []
    arrived = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        got.append((message.topic, bytes(message.payload), correlation))
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("me/inbox", qos=1)
        client.subscribe("iris/responses", qos=1)
        time.sleep(0.3)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = "me/inbox"
        properties.CorrelationData = b"\x00call-7"
        client.publish("iris/requests/x", json.dumps({"features": [SETOSA]}), qos=1, properties=properties)
        assert arrived.wait(TIMEOUT_S)
        time.sleep(0.3)  # nothing else may arrive (the answer goes only there)
    finally:
        client.loop_stop()
        client.disconnect()
    [(topic, payload, correlation)] = got
    assert topic == "me/inbox" and correlation == b"\x00call-7"
    assert json.loads(payload)["label"] == ["setosa"]


def test_malformed_requests_go_to_the_error_topic_and_serving_goes_on(mosquitto: Mosquitto, served: Server) -> None:
    errors = subscribe(mosquitto, "iris/errors", 3)
    answers = subscribe(mosquitto, "iris/responses", 1)
    publish(mosquitto, "iris/requests/bad", "{not json")
    publish(mosquitto, "iris/requests/bad", json.dumps({"id": 5, "features": [[1, 2]]}))
    publish(mosquitto, "iris/requests/bad", b"\xff\xfe")
    publish(mosquitto, "iris/requests/good", json.dumps({"id": "ok", "features": [SETOSA]}))
    reports = received(errors)
    assert [r["topic"] for r in reports] == ["iris/requests/bad"] * 3
    assert reports[0]["error"].startswith("malformed JSON") and reports[0]["payload"] == "{not json"
    assert reports[1]["id"] == 5 and "expected shape [-1, 4]" in reports[1]["error"]
    assert reports[2]["payload"] == "//4="  # not UTF-8: base64
    assert received(answers)[0]["id"] == "ok"


def test_a_broker_restart_is_survived(mosquitto: Mosquitto, served: Server) -> None:
    mosquitto.stop()
    wait_ready(served, want=False)
    mosquitto.start()
    wait_ready(served)
    answers = subscribe(mosquitto, "iris/responses", 1)
    publish(mosquitto, "iris/requests/after", json.dumps({"id": "after", "features": [VIRGINICA]}))
    [answer] = received(answers)
    assert answer == {"id": "after", "label": ["virginica"], "probability": answer["probability"]}
