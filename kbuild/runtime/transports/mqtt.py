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

QoS 1 both ways: a request is acknowledged to the broker only once its answer
(or error) was published and the broker took it, so a crash between the two
redelivers the request. Requests run through the service like HTTP ones,
batched together. The client (paho-mqtt) runs on a thread of its own and
reconnects with backoff; the server is ready only while subscribed. SIGTERM
unsubscribes, lets the requests in flight be answered, then disconnects.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kbuild.runtime.errors import AppError, ClientError
from kbuild.runtime.inference import Service
from kbuild.runtime.settings.mqtt import MqttSettings
from kbuild.runtime.tensors import Vars, decode_inputs, dumps, encode_outputs, loads

_PROTOCOL = ("mqtt",)
_TIMEOUT_S = 30.0


class MqttEndpoint:
    def __init__(self, service: Service, settings: MqttSettings) -> None:
        self.service = service
        self.settings = settings
        self.description = f"mqtt://{settings.broker} {settings.request_topic}"
        self._loop = asyncio.get_running_loop()
        self._subscribed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        # our publish's mid -> (the request's mid, its qos); the event loop
        # alone reads and writes it (paho calls back holding its own locks)
        self._acks: dict[int, tuple[int, int]] = {}
        self._single_bytes = _single_bytes_input(service)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or "",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        username, password = settings.credentials()
        if username is not None:
            client.username_pw_set(username, password)
        if settings.tls is not None:
            client.tls_set(ca_certs=settings.tls.ca_file, certfile=settings.tls.cert_file,
                           keyfile=settings.tls.key_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed_to
        client.on_disconnect = self._disconnected
        client.on_message = self._received
        client.on_publish = self._published
        self.client = client
        service.ready_checks.append(lambda: self._subscribed)

    def start(self) -> None:
        # connect_async: with no broker the client keeps trying in its thread
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()

    async def shutdown(self, grace: float) -> None:
        self._stopping = True
        if self._subscribed:
            self.client.unsubscribe(self.settings.request_topic)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            pass
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    # -- the client's thread

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._event("mqtt-refused", level="warning", reason=str(reason))
            return
        self._event("mqtt-connected", broker=self.settings.broker)
        # paho leaves Nagle's algorithm on: an answer written after an
        # acknowledgement would wait for the broker's delayed ACK (~40 ms)
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        self._loop.call_soon_threadsafe(self._answer_taken, mid)

    # -- the event loop

    def _answer_taken(self, mid: int) -> None:
        """The broker has an answer: now its request is acknowledged."""
        pending = self._acks.pop(mid, None)
        if pending is not None:
            self.client.ack(*pending)

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        started = time.perf_counter()
        self._in_flight += 1
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
            return decode_inputs({self._single_bytes: [payload]}, self.service.spec.inputs)
        try:
            obj = loads(payload)
        except ValueError as error:
            raise ClientError(f"malformed JSON: {error}") from None
        if not isinstance(obj, dict):
            raise ClientError("expected a JSON object of named inputs")
        if "id" in obj:
            request["id"] = obj.pop("id")
        return decode_inputs(obj, self.service.spec.inputs)

    def _answer(self, message: mqtt.MQTTMessage, request_id: object, done: asyncio.Future[Vars | None], started: float) -> None:
        error = done.exception()
        if error is not None:
            self._fail(message, request_id, error, started)
            return
        outputs = done.result()
        answer: dict[str, Any] = {} if outputs is None else encode_outputs(outputs)
        if request_id is not None:
            answer["id"] = request_id
        self._reply(message, answer, started, "200")

    def _fail(self, message: mqtt.MQTTMessage, request_id: object, error: BaseException, started: float) -> None:
        text = error.message if isinstance(error, AppError) else f"internal error: {type(error).__name__}: {error}"
        status = str(error.http_status) if isinstance(error, AppError) else "500"
        report: dict[str, Any] = {"error": text, "topic": message.topic, "payload": _text(bytes(message.payload))}
        correlation = _correlation(message)
        if correlation is not None:
            report["correlation_data"] = base64.b64encode(correlation).decode("ascii")
        if request_id is not None:
            report["id"] = request_id
        if self.settings.error_topic is not None:
            self._publish(self.settings.error_topic, dumps(report), None, None)
        self._reply(message, {"error": text, **({"id": request_id} if request_id is not None else {})}, started, status,
                    only_to_requester=True)  # fmt: skip

    def _reply(self, message: mqtt.MQTTMessage, answer: dict[str, Any], started: float, status: str,
               only_to_requester: bool = False) -> None:  # fmt: skip
        requested = _response_topic(message)
        topic = requested or (None if only_to_requester else self.settings.response_topic)
        if topic is not None:
            self._publish(topic, dumps(answer), message, _correlation(message) if requested else None)
        else:
            self._ack(message)
        self.service.metrics.in_flight.add(-1, _PROTOCOL)
        self.service.metrics.answered("mqtt", "infer", status, time.perf_counter() - started)
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def _publish(self, topic: str, payload: bytes, request: mqtt.MQTTMessage | None, correlation: bytes | None) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        qos = self.settings.qos
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if request is None:
            return
        if qos > 0 and info.rc == mqtt.MQTT_ERR_SUCCESS:
            # _answer_taken runs after this, on this loop, even if the broker was quick
            self._acks[info.mid] = (request.mid, request.qos)
        else:
            self._ack(request)

    def _ack(self, message: mqtt.MQTTMessage) -> None:
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)

    def _event(self, event: str, **fields: Any) -> None:
        if self.service.events is not None:
            self.service.events(event, **fields)


def _single_bytes_input(service: Service) -> str | None:
    inputs = service.spec.inputs
    return inputs[0].name if len(inputs) == 1 and inputs[0].datatype == "BYTES" else None


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

