"""At least once over MQTT, against a real mosquitto: a request is
acknowledged only after the broker took its answer (the broker's own log
shows the order); an answer the broker refuses sends the request to the
error topic, or leaves it unacknowledged to come back after a reconnect;
TLS from a test CA; username and password; SIGTERM answers the requests in
flight first."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers.mqtt_broker import Mosquitto, broker
from tests.helpers.runtime import SETOSA, VIRGINICA, Server, iris_pipeline, subprocess_env, write_root
from tests.runtime.transports.test_mqtt import publish, received, subscribe, wait_ready

TIMEOUT_S = 30
SERVER_ID = "iris-server"


def mqtt_settings(**extra: Any) -> dict[str, Any]:
    return {
        "broker": "localhost:1",
        "request_topic": "iris/requests/+",
        "response_topic": "iris/responses",
        "error_topic": "iris/errors",
        "qos": 1,
        **extra,
    }


def serve(root_dir: Path, mosquitto: Mosquitto, settings: dict[str, Any], *, wait: bool = True, **env: str) -> Server:
    spec = iris_pipeline(
        serve={"mqtt": settings, "batching": {"max_batch_size": 8, "max_latency_ms": 2}},
    )
    models = root_dir.parent / "models"
    root = write_root(root_dir, spec, models={"model": models / "iris.onnx"})
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_MQTT_BROKER=mosquitto.address, **env)).started()
    if wait:
        wait_ready(srv)
    return srv


@pytest.fixture
def workdir(tmp_path: Path, models: dict[str, Path]) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "iris.onnx").write_bytes(models["onnx"].read_bytes())
    return tmp_path


def metric(srv: Server, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


class Client:
    """A paho requester/listener with a session of its own that outlives its
    connection (as the server's does), so nothing for it is lost while the
    broker restarts."""

    def __init__(
        self, mosquitto: Mosquitto, name: str, topics: tuple[str, ...] = (), credentials: tuple[str, str] | None = None
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.arrived = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.topics = topics
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        if credentials is not None:
            client.username_pw_set(*credentials)
        client.on_message = self._message
        client.on_connect = self._connect
        client.on_disconnect = lambda *args: self.connected.clear()
        client.on_subscribe = lambda *args: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        # no clean start (a new id has no session to clear): mosquitto keeps
        # across its restart only the sessions of clients that did not ask for one
        client.connect("127.0.0.1", mosquitto.port, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client
        assert self.connected.wait(TIMEOUT_S)
        assert not topics or self.subscribed.wait(TIMEOUT_S)

    def _connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.topics:
            client.subscribe([(topic, 1) for topic in self.topics])
        self.connected.set()

    def _message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.arrived:
            self.messages.append(message)
            self.arrived.notify_all()

    def payloads(self, count: int, timeout: float = TIMEOUT_S) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.messages) < count and time.monotonic() < deadline:
                self.arrived.wait(0.1)
            return [json.loads(m.payload) for m in self.messages]

    def distinct(self, count: int, timeout: float = TIMEOUT_S) -> list[Any]:
        """The payloads once `count` different ids arrived (or the time ran out)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while time.monotonic() < deadline:
                payloads = [json.loads(m.payload) for m in self.messages]
                if len({p.get("id") for p in payloads}) >= count:
                    break
                self.arrived.wait(0.1)
            return [json.loads(m.payload) for m in self.messages]

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish until the broker acknowledges it (resending across a restart)."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.connected.wait(1):
                continue
            info = self.client.publish(topic, json.dumps(payload), qos=1)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                continue
            if info.is_published():
                return
        raise AssertionError(f"the broker never took {payload}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def verbose_broker(workdir: Path) -> Iterator[Mosquitto]:
    started = broker(workdir / "broker", verbose=True)
    started.start()
    yield started
    started.stop()


def test_a_request_is_acknowledged_only_after_its_answer_was(verbose_broker: Mosquitto, workdir: Path) -> None:
    srv = serve(workdir / "root", verbose_broker, mqtt_settings(client_id=SERVER_ID))
    try:
        answers = subscribe(verbose_broker, "iris/responses", 1)
        publish(verbose_broker, "iris/requests/a", json.dumps({"id": "a", "features": [SETOSA]}))
        assert received(answers)[0]["label"] == ["setosa"]
        time.sleep(0.5)
    finally:
        assert srv.terminate() == 0
    assert verbose_broker.broker_log is not None
    log = verbose_broker.broker_log.read_text()
    # the broker's own words, in its order: the request sent to the server,
    # the server's answer taken (PUBACK to it), then the server's PUBACK
    sent = re.search(rf"Sending PUBLISH to {SERVER_ID} \(d0, q1, r0, m(\d+), 'iris/requests/a'", log)
    assert sent, log
    answer = re.search(rf"Received PUBLISH from {SERVER_ID} \(d0, q1, r0, m(\d+), 'iris/responses'", log)
    assert answer and answer.start() > sent.start(), log
    taken = log.index(f"Sending PUBACK to {SERVER_ID} (m{answer.group(1)}", answer.start())
    acked = re.search(rf"Received PUBACK from {SERVER_ID} \(Mid: {sent.group(1)}\b", log)
    assert acked, log
    assert acked.start() > taken, "the request was acknowledged before the broker took its answer"


# the server may read requests and write errors, not answers
REFUSING_ACL = "user iris\ntopic read iris/requests/#\ntopic write iris/errors\npattern readwrite $SYS/#\n"


@pytest.fixture
def refusing_broker(workdir: Path) -> Iterator[Mosquitto]:
    acl = REFUSING_ACL + "\nuser tester\ntopic readwrite #\n"
    started = broker(
        workdir / "broker", users={"iris": "iris-pass", "tester": "tester-pass"}, acl=acl, persistence=True
    )
    started.start()
    yield started
    started.stop()


def privileged(mosquitto: Mosquitto, topics: tuple[str, ...]) -> Client:
    return Client(mosquitto, "tester", topics, credentials=("tester", "tester-pass"))


def test_an_answer_the_broker_refuses_sends_the_request_to_the_error_topic(
    refusing_broker: Mosquitto, workdir: Path
) -> None:
    srv = serve(
        workdir / "root",
        refusing_broker,
        mqtt_settings(),
        KBUILD_MQTT_USERNAME="iris",
        KBUILD_MQTT_PASSWORD="iris-pass",
    )
    listener = privileged(refusing_broker, ("iris/errors", "iris/responses"))
    try:
        listener.send("iris/requests/a", {"id": "refused", "features": [SETOSA]})
        [report] = listener.payloads(1)
        assert report["id"] == "refused" and report["topic"] == "iris/requests/a"
        assert "the answer could not be published" in report["error"] and "authori" in report["error"].lower()
        assert json.loads(report["payload"])["features"] == [SETOSA]
        assert metric(srv, "kbuild_mqtt_undelivered_total") == 0
    finally:
        listener.close()
        assert srv.terminate() == 0


def test_a_request_nothing_can_be_published_for_comes_back_after_a_reconnect(
    refusing_broker: Mosquitto, workdir: Path
) -> None:
    settings = mqtt_settings(client_id=SERVER_ID, error_topic="iris/not-allowed-either")
    srv = serve(
        workdir / "root", refusing_broker, settings, KBUILD_MQTT_USERNAME="iris", KBUILD_MQTT_PASSWORD="iris-pass"
    )
    listener = privileged(refusing_broker, ())
    try:
        listener.send("iris/requests/a", {"id": "stuck", "features": [SETOSA]})
        undelivered = srv.wait_event("mqtt-undelivered")
        assert undelivered["level"] == "error" and "not acknowledged" in undelivered["action"]
        assert metric(srv, "kbuild_mqtt_undelivered_total") == 1
        # not acknowledged: after the broker restarts, it delivers the request again
        refusing_broker.stop()
        refusing_broker.start()
        assert srv.wait_event("mqtt-connected")["session_present"] is True
        again = srv.wait_event("mqtt-undelivered")
        assert again["topic"] == "iris/requests/a"
        assert metric(srv, "kbuild_mqtt_undelivered_total") == 2
    finally:
        listener.close()
        assert srv.terminate() == 0


def test_tls_from_a_test_ca(workdir: Path) -> None:
    secure = broker(workdir / "broker", tls=True)
    secure.start()
    try:
        assert secure.ca_file is not None
        srv = serve(workdir / "root", secure, mqtt_settings(tls={"ca_file": str(secure.ca_file)}))
        try:
            answers = subscribe(secure, "iris/responses", 1, "--cafile", str(secure.ca_file))
            publish(
                secure,
                "iris/requests/a",
                json.dumps({"id": "tls", "features": [VIRGINICA]}),
                "--cafile",
                str(secure.ca_file),
            )
            [answer] = received(answers)
            assert answer["id"] == "tls" and answer["label"] == ["virginica"]
        finally:
            assert srv.terminate() == 0
        # a server that does not trust the broker's CA never becomes ready
        stranger = serve(workdir / "root2", secure, mqtt_settings(tls={}), wait=False)
        try:
            time.sleep(2)
            wait_ready(stranger, want=False)
        finally:
            assert stranger.terminate() == 0
    finally:
        secure.stop()


def test_username_and_password(workdir: Path) -> None:
    guarded = broker(workdir / "broker", users={"iris": "s3cret"})
    guarded.start()
    try:
        srv = serve(
            workdir / "root",
            guarded,
            mqtt_settings(username="${BROKER_USER}", password="${BROKER_PASSWORD}"),
            BROKER_USER="iris",
            BROKER_PASSWORD="s3cret",
        )
        try:
            answers = subscribe(guarded, "iris/responses", 1, "-u", "iris", "-P", "s3cret")
            publish(
                guarded,
                "iris/requests/a",
                json.dumps({"id": "auth", "features": [SETOSA]}),
                "-u",
                "iris",
                "-P",
                "s3cret",
            )
            assert received(answers)[0]["id"] == "auth"
        finally:
            assert srv.terminate() == 0
        wrong = serve(
            workdir / "root2",
            guarded,
            mqtt_settings(),
            wait=False,
            KBUILD_MQTT_USERNAME="iris",
            KBUILD_MQTT_PASSWORD="wrong",
        )
        try:
            refused = wrong.wait_event("mqtt-refused")
            assert "not authori" in refused["reason"].lower() or "bad user" in refused["reason"].lower()
            wait_ready(wrong, want=False)
        finally:
            assert wrong.terminate() == 0
    finally:
        guarded.stop()


SLOW_CODE = """
import time


def make(config):
    def slow(variables):
        time.sleep(config["seconds"])
        return {}

    return slow
"""


def test_sigterm_answers_the_requests_in_flight(mosquitto: Mosquitto, workdir: Path) -> None:
    spec = iris_pipeline(
        serve={"mqtt": mqtt_settings(), "batching": {"max_batch_size": 1, "max_latency_ms": 1}},
    )
    spec["steps"].insert(
        0,
        {
            "name": "slow",
            "type": "python",
            "function": "rt_slow:make",
            "code": "rt_slow.py",
            "config": {"seconds": 0.2},
        },
    )
    root = write_root(
        workdir / "root",
        spec,
        models={"model": workdir / "models" / "iris.onnx"},
        code={"slow": {"rt_slow.py": SLOW_CODE}},
    )
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_MQTT_BROKER=mosquitto.address)).started()
    wait_ready(srv)
    listener = Client(mosquitto, "listener", ("iris/responses",))
    count = 10
    try:
        requester = Client(mosquitto, "requester")
        for i in range(count):
            requester.send("iris/requests/a", {"id": i, "features": [SETOSA]})
        requester.close()
        listener.payloads(1)  # the first is answered, the others are in flight
        assert srv.terminate() == 0
        answers = listener.payloads(count, timeout=5)
        assert sorted(a["id"] for a in answers) == list(range(count))
    finally:
        listener.close()
        if srv.proc.poll() is None:
            srv.terminate()


@pytest.fixture
def persistent_broker(workdir: Path) -> Iterator[Mosquitto]:
    started = broker(workdir / "broker", persistence=True, verbose=True)
    started.start()
    yield started
    started.stop()


@pytest.mark.parametrize("client_id", [SERVER_ID, None], ids=["named-session", "made-up-id"])
def test_a_broker_restart_mid_traffic_loses_no_answer(
    persistent_broker: Mosquitto, workdir: Path, client_id: str | None
) -> None:
    settings = mqtt_settings(client_id=client_id) if client_id else mqtt_settings()
    srv = serve(workdir / "root", persistent_broker, settings)
    requester = Client(persistent_broker, "requester", ("iris/responses", "iris/errors"))
    count = 60

    def request(index: int) -> dict[str, Any]:
        return {"id": index, "features": [SETOSA if index % 2 else VIRGINICA]}

    try:
        # a burst the server is still answering when the broker goes down:
        # paho on both sides resends what the broker had not acknowledged
        for index in range(count // 2):
            requester.client.publish(f"iris/requests/{index % 3}", json.dumps(request(index)), qos=1)
        srv.wait_event("mqtt-connected")
        persistent_broker.stop()
        persistent_broker.start()
        assert srv.wait_event("mqtt-disconnected")["action"] == "reconnecting"
        assert srv.wait_event("mqtt-connected")["session_present"] is True
        for index in range(count // 2, count):
            requester.send(f"iris/requests/{index % 3}", request(index))
        # at least once: an answer may come twice (resent across the restart)
        answers = requester.distinct(count, timeout=60)
        ids = sorted({answer["id"] for answer in answers if "error" not in answer})
        assert ids == list(range(count)), (len(answers), sorted(set(range(count)) - set(ids)))
        for answer in answers:
            assert answer["label"] == [("setosa" if answer["id"] % 2 else "virginica")]
    finally:
        requester.close()
        assert srv.terminate() == 0
