"""The stream: consume a micro-batch, answer each record, produce, commit.

One thread owns the consumer and the producer (neither is shared between
threads), so every callback (deliveries, commits, rebalances) runs here too.

    poll the first record, then take what arrives within max_latency_ms, up
    to max_batch_size -> for each record: handler -> output (same key, input
    headers plus kbuild-pipeline, kbuild-pipeline-version, kbuild-model-version)
    or dead-letter record (original key, bytes and headers plus the error) or
    nothing (dropped) -> commit, every COMMIT_INTERVAL_S, the offsets whose
    every output the broker acknowledged (offsets.py).

A delivery that fails is produced again until the broker takes it; an output
the broker refuses for good (too large, say) sends its input to the dead-letter
topic instead. While too many outputs wait for acknowledgement (a stalled
broker) the partitions are paused rather than buffering without bound. A new
model offered by the model watcher is swapped in between two batches.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from kbuild.runtime.log import log_event
from kbuild.runtime.service import Service
from kbuild.runtime.streaming.clients import Headers, client_logger, incoming_headers
from kbuild.runtime.streaming.combine import BatchHandler
from kbuild.runtime.streaming.config import StreamConfig
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.models import ModelSlot
from kbuild.runtime.streaming.offsets import Entry, OffsetTracker
from kbuild.runtime.streaming.records import RecordError, describe

COMMIT_INTERVAL_S = 0.5
LAG_INTERVAL_S = 2.0
IDLE_POLL_S = 0.1
RETRY_BACKOFF_S = 0.5
REVOKE_FLUSH_S = 10.0
# Wait this long at start for the model watcher to replay the newest model.
REPLAY_WAIT_S = 30.0
MAX_ERROR_CHARS = 4096
# librdkafka error codes that still deserve another try when a delivery fails.
_TRANSIENT = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}

# topic, key, value, headers, kind ("out" or "dead")
_Output = tuple[str, bytes | None, bytes | None, Headers, str]


class Stream:
    def __init__(
        self,
        *,
        config: StreamConfig,
        service: Service,
        handler: BatchHandler,
        metrics: StreamMetrics,
        log: TextIO,
        slot: ModelSlot | None = None,
        replayed: threading.Event | None = None,
        model_version: str,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.config = config
        self.service = service
        self.handler = handler
        self.metrics = metrics
        self.log = log
        self.slot = slot
        self.replayed = replayed
        self.on_failure = on_failure
        self.stopping = threading.Event()
        self.grace = 0.0
        self.tracker = OffsetTracker()
        self._unacked = 0  # produced, not yet acknowledged
        self._max_unacked = max(8 * config.max_batch_size, 5000)
        self._retries: deque[tuple[float, Entry, _Output]] = deque()  # (due, …)
        self._paused = False
        self._next_commit = 0.0
        self._next_lag = 0.0
        self._last_error = 0.0
        self._set_model(model_version)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._thread = threading.Thread(target=self._main, name="kbuild-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Blocking: finish the current batch, give outputs in flight `grace`
        seconds to be acknowledged, commit, leave the group."""
        self.grace = grace
        self.stopping.set()
        self._thread.join(grace + 15.0)

    # -- the thread

    def _main(self) -> None:
        try:
            if self._wait_until_ready():
                self._run()
        except BaseException as e:  # a bug or a fatal client error: never half-alive
            log_event(self.log, "stream-failed", level="error", error=describe(e))
            self.on_failure(e)

    def _wait_until_ready(self) -> bool:
        while self.service.pipeline is None:
            if self.stopping.wait(0.05):
                return False
        if self.replayed is not None and not self.replayed.wait(REPLAY_WAIT_S):
            log_event(
                self.log,
                "model-replay-slow",
                level="warning",
                message=f"no model replayed within {REPLAY_WAIT_S:.0f} s; starting with the current one",
            )
        return not self.stopping.is_set()

    def _run(self) -> None:
        logger = client_logger(self.log)
        common = {"error_cb": self._client_error, "logger": logger}
        self._consumer = consumer = Consumer(
            {**self.config.consumer_settings(), **common, "on_commit": self._committed}
        )
        self._producer = producer = Producer({**self.config.producer_settings(), **common})
        try:
            consumer.subscribe(
                [self.config.source.topic],
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )
            while not self.stopping.is_set():
                self._swap_model()
                batch = self._collect(consumer)
                if batch:
                    self._process(batch)
                producer.poll(0)
                self._retry()
                now = time.monotonic()
                if now >= self._next_commit:
                    self._next_commit = now + COMMIT_INTERVAL_S
                    self._commit(asynchronous=True)
                if now >= self._next_lag:
                    self._next_lag = now + LAG_INTERVAL_S
                    self._measure_lag()
                self._apply_backpressure()
            self._drain()
        finally:
            consumer.close()
            producer.flush(0)

    def _collect(self, consumer: Consumer) -> list[Message]:
        """The first record waits up to IDLE_POLL_S; the batch then grows for
        at most max_latency_ms or to max_batch_size records."""
        first = consumer.poll(IDLE_POLL_S)
        if first is None:
            return []
        size = self.config.max_batch_size
        if size == 1 or self._paused:
            return [first]
        return [first, *consumer.consume(size - 1, self.config.max_latency_s)]

    def _process(self, batch: list[Message]) -> None:
        records = []
        for msg in batch:
            err = msg.error()
            if err is None:
                records.append(msg)
            else:
                self._consumer_error(err)
        if not records:
            return
        outcomes = self.handler([msg.value() for msg in records])
        # Locals: this loop runs once per record.
        sink, add, produce, headers = self.config.sink.topic, self.tracker.add, self._produce, self._output_headers
        for msg, outcome in zip(records, outcomes, strict=True):
            entry = add(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg)
            if type(outcome) is bytes:
                produce(entry, sink, msg.key(), outcome, headers(msg), "out")
            elif outcome is None:
                self.metrics.dropped += 1
            else:
                assert isinstance(outcome, RecordError)
                self._dead_letter(entry, outcome.stage, outcome.message)
        self.metrics.records_in += len(records)
        self.metrics.batch(len(records))

    # -- producing

    def _produce(
        self,
        entry: Entry,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        kind: str,
        again: bool = False,
    ) -> None:
        producer = self._producer
        assert producer is not None

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._delivered(entry, err, (topic, key, value, headers, kind))

        if not again:  # a retry is still counted from its first attempt
            entry.pending += 1
        self._unacked += 1
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:  # the client's queue is full: let it drain
                producer.poll(0.1)

    def _delivered(self, entry: Entry, err: KafkaError | None, output: _Output) -> None:
        self._unacked -= 1
        if err is None:
            entry.pending -= 1
            if output[4] == "out":
                self.metrics.records_out += 1
            else:
                self.metrics.dead_lettered += 1
            return
        if not entry.live:  # revoked: the partition's next owner answers it again
            entry.pending -= 1
            return
        if output[4] == "out" and not (err.retriable() or err.code() in _TRANSIENT):
            self._dead_letter(entry, "delivery", f"the broker refused the output: {err.str()}")
            entry.pending -= 1
            return
        self.metrics.delivery_retries += 1
        self._warn("delivery-failed", topic=output[0], error=err.str(), action="retrying")
        self._retries.append((time.monotonic() + RETRY_BACKOFF_S, entry, output))

    def _retry(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, entry, (topic, key, value, headers, kind) = self._retries.popleft()
            if entry.live:
                self._produce(entry, topic, key, value, headers, kind, again=True)
            else:
                entry.pending -= 1

    def _dead_letter(self, entry: Entry, stage: str, message: str) -> None:
        self.metrics.failed[stage] += 1
        msg: Message = entry.message
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
        self._produce(entry, topic, msg.key(), msg.value(), headers, "dead")

    def _output_headers(self, msg: Message) -> Headers:
        if not msg.headers():
            return self._static_headers
        kept = [(k, v) for k, v in incoming_headers(msg) if not k.startswith("kbuild-")]
        return kept + self._static_headers

    # -- models

    def _set_model(self, version: str) -> None:
        spec = self.service.spec
        self.metrics.model_version = version
        self._static_headers: Headers = [
            ("kbuild-pipeline", spec.name.encode()),
            ("kbuild-pipeline-version", (spec.version or "").encode()),
            ("kbuild-model-version", version.encode("utf-8")),
        ]

    def _swap_model(self) -> None:
        if self.slot is None:
            return
        candidate = self.slot.take()
        if candidate is None:
            return
        self.service.pipeline = candidate.pipeline
        self._set_model(candidate.manifest.version)
        self.metrics.models_applied += 1
        log_event(self.log, "model-applied", version=candidate.manifest.version, id=candidate.manifest.id)

    # -- offsets, rebalances

    def _commit(self, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = [TopicPartition(t, p, o) for t, p, o in self.tracker.committable(only)]
        if not offsets:
            return
        self.metrics.commits += 1
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._committed(None, consumer.commit(offsets=offsets, asynchronous=False) or [])
        except KafkaException as e:
            error = e.args[0] if e.args else None
            self._committed(error if isinstance(error, KafkaError) else None, offsets, failed=True)

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition], failed: bool = False) -> None:
        bad = [tp for tp in partitions if failed or err is not None or tp.error is not None]
        if not bad:
            return
        self.metrics.commit_failures += 1
        for tp in bad:
            self.tracker.commit_failed(tp.topic, tp.partition, tp.offset)
        self._warn("commit-failed", error=str(err or bad[0].error), action="committing again")

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused = False
        log_event(self.log, "partitions-assigned", partitions=_names(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before another replica takes them: let outputs in flight land and
        commit what is done, so the next owner repeats as little as possible."""
        producer = self._producer
        if producer is not None:
            producer.flush(REVOKE_FLUSH_S)
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(asynchronous=False, only=keys)
        self.tracker.revoke(keys)
        log_event(self.log, "partitions-revoked", partitions=_names(partitions))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.tracker.revoke({(tp.topic, tp.partition) for tp in partitions})
        log_event(self.log, "partitions-lost", level="warning", partitions=_names(partitions))

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        if not self._paused and self._unacked >= self._max_unacked:
            consumer.pause(consumer.assignment())
            self._paused = True
            self._warn("paused", unacknowledged=self._unacked)
        elif self._paused and self._unacked <= self._max_unacked // 2:
            consumer.resume(consumer.assignment())
            self._paused = False

    def _measure_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        lag: dict[tuple[str, int], int] = {}
        assignment = consumer.assignment()
        if assignment:
            for tp in consumer.position(assignment):
                _, high = consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
                if tp.offset >= 0 and high >= 0:
                    lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        self.metrics.set_lag(lag)

    def _drain(self) -> None:
        """On stop: the grace period for outputs in flight, then a final commit."""
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + self.grace
        while (self._unacked or self._retries) and time.monotonic() < deadline:
            producer.poll(0.1)
            self._retry()
        self._commit(asynchronous=False)

    # -- errors

    def _consumer_error(self, err: KafkaError) -> None:
        self.metrics.consumer_errors += 1
        if err.fatal():
            raise KafkaException(err)
        self._warn("consumer-error", error=err.str())

    def _client_error(self, err: KafkaError) -> None:
        if err.fatal():
            # Raised inside a poll on this thread: ends the stream with it.
            raise KafkaException(err)
        self._warn("kafka-error", error=err.str())

    def _warn(self, event: str, **fields: Any) -> None:
        """At most one line per second: a stalled broker fails every record."""
        now = time.monotonic()
        if now - self._last_error >= 1.0:
            self._last_error = now
            log_event(self.log, event, level="warning", **fields)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
