"""Producing outputs and dead letters: retries of failed deliveries, the
dead-letter record of an input that failed, the epoch's counts."""

from __future__ import annotations

import time

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
)

from kbuild.runtime.log import log_event
from kbuild.runtime.streaming.clients import Headers, incoming_headers
from kbuild.runtime.streaming.stream_state import Output, StreamState

RETRY_BACKOFF_S = 0.5
MAX_ERROR_CHARS = 4096
# librdkafka error codes that still deserve another try when a delivery fails.
_TRANSIENT = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


class Delivery(StreamState):
    def _produce(self, output: Output) -> str | None:
        """Produces, waiting while the client's queue is full; the client's
        reason when it refuses the record outright (too large, say)."""
        producer = self._producer
        assert producer is not None
        topic, key, value, headers = output
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                return None
            except BufferError:
                producer.poll(0.1)
            except KafkaException as e:
                return kafka_error(e)

    def _failed(self, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of an output the broker did not take (the
        producer reports failures only)."""
        if err is None:
            return
        topic = msg.topic() or ""
        output: Output = (topic, msg.key(), msg.value(), incoming_headers(msg))
        is_output = self._count(topic, -1)
        if is_output and not (err.retriable() or err.code() in _TRANSIENT):
            source = self.book.find(output[1], output[2])
            if source is not None:
                self._dead_letter(source, "delivery", f"the broker refused the output: {err.str()}")
                return
            # The output of a record settled already: cannot happen, as a
            # settle waits for every report; kept loud rather than silent.
            log_event(self.log, "output-refused", level="error", topic=topic, error=err.str())
            return
        self.metrics.delivery_retries += 1
        self._warn("delivery-failed", topic=topic, error=err.str(), action="retrying")
        self._retries.append((time.monotonic() + RETRY_BACKOFF_S, output))

    def _retry(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, output = self._retries.popleft()
            refused = self._produce(output)
            if refused is None:
                self._count(output[0], +1)
            else:
                log_event(self.log, "produce-refused", level="error", topic=output[0], error=refused)

    def _count(self, topic: str, delta: int) -> bool:
        """Counts a record produced (+1) or failed (-1) in the book's epoch;
        True for an output, False for a dead letter."""
        if topic == self.config.sink.topic:
            self.book.outputs += delta
            return True
        self.book.dead_letters += delta
        return False

    def _dead_letter(self, msg: Message, stage: str, message: str) -> None:
        self.metrics.failed[stage] += 1
        topic = self.config.dead_letter
        if topic is None:
            self._warn("record-failed", stage=stage, error=message, action="skipped (no dead_letter topic)")
            return
        headers = incoming_headers(msg)
        headers += [
            ("kbuild-error", message[:MAX_ERROR_CHARS].encode("utf-8", "replace")),
            ("kbuild-error-stage", stage.encode()),
            ("kbuild-source-topic", (msg.topic() or "").encode()),
            ("kbuild-source-partition", str(msg.partition()).encode()),
            ("kbuild-source-offset", str(msg.offset()).encode()),
            *self._static_headers,
        ]
        refused = self._produce((topic, msg.key(), msg.value(), headers))
        if refused is None:
            self.book.dead_letters += 1
        else:  # nowhere left to put it: said loudly, with where to find it
            log_event(
                self.log,
                "record-not-dead-lettered",
                level="error",
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                error=message,
                refused=refused,
            )

    def _output_headers(self, msg: Message) -> Headers:
        kept = [(k, v) for k, v in incoming_headers(msg) if not k.startswith("kbuild-")]
        return kept + self._static_headers


def kafka_error(e: KafkaException) -> str:
    error = e.args[0] if e.args else None
    return error.str() if isinstance(error, KafkaError) else str(e)
