"""MQTT transport: requests on a topic, answers on another (serve.mqtt).

A request's payload is what POST /predict takes: a JSON object of named
inputs (a top-level "id" is echoed, not an input), or, for a pipeline whose one
input is BYTES, the payload's bytes as that input's one row. The answer goes
to the request's MQTT 5 response topic with its correlation data (and only
there), else to response_topic, as a JSON object of the outputs plus the
request's id. A request that fails goes to error_topic as {"error", "topic",
"id" or "correlation_data" (base64), "payload" (text, or base64 when not
UTF-8)}; a request that named a response topic also gets {"error"} there, so
its requester does not wait in vain.

At least once (QoS 1): a request is acknowledged to the broker only after the
broker took every message published for it (its PUBACK, with a success
reason code). Until then the broker holds the request in this server's
session, which outlives a broken connection by serve.mqtt.session_expiry_s:
after reconnecting the broker delivers it again, and paho sends again the
answers that were not acknowledged. Where the broker refuses an answer (a
PUBACK with a failure reason code, such as 0x87 not authorized), the request
goes to error_topic with that reason, and is acknowledged once that report is
taken. Where there is no error_topic, or it is refused too, the request is not
acknowledged: the server logs "mqtt-undelivered", counts it in
kbuild_mqtt_undelivered_total, and the broker delivers the request again when
the server next connects. At QoS 0 nothing is acknowledged and an answer that
cannot be written is logged as "mqtt-undelivered" (at most once, as QoS 0
says).

Requests run through the service like HTTP ones, batched together. The client
(paho-mqtt) runs on a thread of its own and reconnects with backoff; the
server is ready only while subscribed. SIGTERM unsubscribes, lets the requests
in flight be answered and acknowledged, then disconnects (ending the session
unless serve.mqtt.client_id names it, so that a restart resumes it).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kbuild.runtime.contract.errors import AppError, ClientError
from kbuild.runtime.contract.mqtt import MqttSettings
from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.inference import Service
from kbuild.runtime.metrics import Counter
from kbuild.runtime.tensors import Vars, decode_inputs, dumps, encode_outputs, loads, raw_value

_PROTOCOL = ("mqtt",)
_TIMEOUT_S = 30.0


@dataclass
class _Delivery:
    """What was published for one request and is not yet confirmed; the
    request is acknowledged once all of it is."""

    message: mqtt.MQTTMessage
    request_id: object
    outstanding: int = 0
    refused: list[str] = field(default_factory=list)  # "TOPIC: reason" of each refused publish
    fallback: bool = True  # may still go to error_topic if an answer is refused


class MqttEndpoint:
    def __init__(self, service: Service, settings: MqttSettings) -> None:
        self.service = service
        self.settings = settings
        self.description = f"mqtt://{settings.broker} {settings.request_topic}"
        self._loop = asyncio.get_running_loop()
        self._subscribed = False
        self._open = 0  # requests received and not yet settled (acknowledged or given up)
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        # our publish's mid -> its request's delivery; the event loop alone
        # reads and writes it (paho calls back holding its own locks)
        self._pending: dict[int, _Delivery] = {}
        self._single_bytes = _single_bytes_input(service)
        self.undelivered = Counter(
            "kbuild_mqtt_undelivered_total",
            "MQTT requests whose answer the broker did not take (not acknowledged: "
            "delivered again when the server next connects)",
        )
        self.undelivered.inc(amount=0)
        service.metrics.add_collector(self.undelivered.render)
        # a session can only be resumed under the same client id: make one up front
        self._named_session = settings.client_id is not None
        client_id = settings.client_id or f"kbuild-{service.spec.name}-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        username, password = settings.credentials()
        if username is not None:
            client.username_pw_set(username, password)
        if settings.tls is not None:
            client.tls_set(
                ca_certs=settings.tls.ca_file,
                certfile=settings.tls.cert_file,
                keyfile=settings.tls.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed_to
        client.on_disconnect = self._disconnected
        client.on_message = self._received
        client.on_publish = self._published
        self.client = client
        service.ready_checks.append(lambda: self._subscribed)

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        # Never a clean start: a named session is resumed even on the first
        # connect (a restart), and a made-up id has none to resume. Mosquitto
        # 2.0 writes only the sessions of clients that connected without a
        # clean start into its persistence file, so a clean start would lose
        # the requests it holds for us when the broker restarts.
        # connect_async: with no broker the client keeps trying in its thread
        self.client.connect_async(
            self.settings.host, self.settings.port, keepalive=30, clean_start=False, properties=properties
        )
        self.client.loop_start()

    async def shutdown(self, grace: float) -> None:
        self._stopping = True
        if self._subscribed:
            self.client.unsubscribe(self.settings.request_topic)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            self._event(
                "mqtt-unfinished",
                level="warning",
                requests=self._open,
                action="not acknowledged: the broker delivers them again",
            )
        properties = None
        if not self._named_session:  # nobody will resume a made-up id's session
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        self.client.disconnect(properties=properties)
        await asyncio.to_thread(self.client.loop_stop)

    # -- the client's thread

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._event("mqtt-refused", level="warning", reason=str(reason))
            return
        self._event("mqtt-connected", broker=self.settings.broker, session_present=bool(flags.session_present))
        # paho leaves Nagle's algorithm on: an answer written after an
        # acknowledgement would wait for the broker's delayed ACK (~40 ms)
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._stopping:
            client.subscribe(self.settings.request_topic, qos=self.settings.qos)

    def _subscribed_to(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self._subscribed = not any(r.is_failure for r in reasons)

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._subscribed = False
        if not self._stopping:
            self._event("mqtt-disconnected", level="warning", reason=str(reason), action="reconnecting")

    def _received(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._handle, message)

    def _published(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        refused = str(reason) if reason is not None and reason.is_failure else None
        self._loop.call_soon_threadsafe(self._taken, mid, refused)

    # -- the event loop

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        started = time.perf_counter()
        self._open += 1
        self._idle.clear()
        self.service.metrics.in_flight.add(1, _PROTOCOL)
        request: dict[str, Any] = {}
        try:
            future = self.service.submit(self._inputs(bytes(message.payload), request), _TIMEOUT_S)
        except AppError as error:
            self._fail(message, request.get("id"), error, started)
            return
        future.add_done_callback(lambda done: self._answer(message, request.get("id"), done, started))

    def _inputs(self, payload: bytes, request: dict[str, Any]) -> Vars:
        """The request's inputs; its id, once read, goes into `request`."""
        if self._single_bytes is not None:
            return {self._single_bytes.name: raw_value(self._single_bytes, payload)}
        try:
            obj = loads(payload)
        except ValueError as error:
            raise ClientError(f"malformed JSON: {error}") from None
        if not isinstance(obj, dict):
            raise ClientError("expected a JSON object of named inputs")
        if "id" in obj:
            request["id"] = obj.pop("id")
        return decode_inputs(obj, self.service.spec.inputs)

    def _answer(
        self, message: mqtt.MQTTMessage, request_id: object, done: asyncio.Future[Vars | None], started: float
    ) -> None:
        error = done.exception()
        if error is not None:
            self._fail(message, request_id, error, started)
            return
        outputs = done.result()
        answer: dict[str, Any] = {} if outputs is None else encode_outputs(outputs)
        if request_id is not None:
            answer["id"] = request_id
        delivery = _Delivery(message, request_id)
        requested = _response_topic(message)
        topic = requested or self.settings.response_topic
        if topic is not None:
            self._publish(topic, dumps(answer), _correlation(message) if requested else None, delivery)
        self._answered(delivery, started, "200")

    def _fail(self, message: mqtt.MQTTMessage, request_id: object, error: BaseException, started: float) -> None:
        text = error.message if isinstance(error, AppError) else f"internal error: {type(error).__name__}: {error}"
        status = str(error.http_status) if isinstance(error, AppError) else "500"
        # the error report is the fallback already: a refused one has none
        delivery = _Delivery(message, request_id, fallback=False)
        self._report(delivery, text)
        requested = _response_topic(message)
        if requested is not None:
            reply = {"error": text, **({"id": request_id} if request_id is not None else {})}
            self._publish(requested, dumps(reply), _correlation(message), delivery)
        self._answered(delivery, started, status)

    def _report(self, delivery: _Delivery, text: str) -> None:
        """The request and its error on error_topic, if there is one."""
        if self.settings.error_topic is None:
            return
        message = delivery.message
        report: dict[str, Any] = {"error": text, "topic": message.topic, "payload": _text(bytes(message.payload))}
        correlation = _correlation(message)
        if correlation is not None:
            report["correlation_data"] = base64.b64encode(correlation).decode("ascii")
        if delivery.request_id is not None:
            report["id"] = delivery.request_id
        self._publish(self.settings.error_topic, dumps(report), None, delivery)

    def _answered(self, delivery: _Delivery, started: float, status: str) -> None:
        self.service.metrics.in_flight.add(-1, _PROTOCOL)
        self.service.metrics.answered("mqtt", "infer", status, time.perf_counter() - started)
        if delivery.outstanding == 0:
            self._settle(delivery)

    def _publish(self, topic: str, payload: bytes, correlation: bytes | None, delivery: _Delivery) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        qos = self.settings.qos
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if qos == 0:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._event("mqtt-undelivered", level="warning", topic=topic, reason=mqtt.error_string(info.rc), qos=0)
            return
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # paho keeps a QoS 1 message until its PUBACK, sending it again
            # after a reconnect; _taken runs after this, on this loop
            self._pending[info.mid] = delivery
            delivery.outstanding += 1
        else:
            delivery.refused.append(f"{topic}: {mqtt.error_string(info.rc)}")

    def _taken(self, mid: int, refused: str | None) -> None:
        """The broker answered one of our publishes."""
        delivery = self._pending.pop(mid, None)
        if delivery is None:  # QoS 0, or not a request's
            return
        delivery.outstanding -= 1
        if refused is not None:
            delivery.refused.append(f"the broker refused the message ({refused})")
        if delivery.outstanding == 0:
            self._settle(delivery)

    def _settle(self, delivery: _Delivery) -> None:
        """Everything published for the request was answered: acknowledge it,
        or send it to error_topic, or leave it to come back."""
        if delivery.refused and delivery.fallback and self.settings.error_topic is not None:
            delivery.fallback = False
            reasons, delivery.refused = "; ".join(delivery.refused), []
            self._report(delivery, f"the answer could not be published: {reasons}")
            if delivery.outstanding > 0:
                return
        message = delivery.message
        if delivery.refused:
            self.undelivered.inc()
            self._event(
                "mqtt-undelivered",
                level="error",
                topic=message.topic,
                reasons=delivery.refused,
                action="not acknowledged: the broker delivers the request again when the server next connects",
            )
        elif message.qos > 0:
            self.client.ack(message.mid, message.qos)
        self._open -= 1
        if self._open == 0:
            self._idle.set()

    def _event(self, event: str, **fields: Any) -> None:
        if self.service.events is not None:
            self.service.events(event, **fields)


def _single_bytes_input(service: Service) -> TensorSpec | None:
    inputs = service.spec.inputs
    return inputs[0] if len(inputs) == 1 and inputs[0].datatype == "BYTES" else None


def _response_topic(message: mqtt.MQTTMessage) -> str | None:
    properties = message.properties
    topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    return topic if isinstance(topic, str) and topic else None


def _correlation(message: mqtt.MQTTMessage) -> bytes | None:
    properties = message.properties
    data = getattr(properties, "CorrelationData", None) if properties is not None else None
    return bytes(data) if data is not None else None


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii")


async def start(service: Service, settings: MqttSettings) -> MqttEndpoint:
    endpoint = MqttEndpoint(service, settings)
    endpoint.start()
    return endpoint
