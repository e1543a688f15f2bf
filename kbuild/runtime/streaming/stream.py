"""The stream: consume a micro-batch, answer each record, produce, commit.

One thread owns the consumer and the producer (neither is shared between
threads), so every callback (failed deliveries, commits, rebalances) runs here
too.

    poll the first record, then take what arrives within max_latency_ms, up
    to max_batch_size -> for each record: handler -> output (same key, input
    headers plus kbuild-pipeline, kbuild-pipeline-version, kbuild-model-version)
    or dead-letter record (original key, bytes and headers plus the error) or
    nothing (dropped) -> settle and commit (offsets.py) every
    COMMIT_INTERVAL_S, whenever the source runs dry, and whenever too many
    outputs wait for acknowledgement.

Settling waits until the producer's queue has drained; that wait is also the
back-pressure of a slow or stalled broker (past PAUSE_AFTER_S the partitions
are paused and the consumer keeps its place in the group). A delivery that
fails is produced again until the broker takes it; an output the broker
refuses for good (too large, say) sends its input to the dead-letter topic
instead. A new model offered by the model watcher is swapped in between two
batches.
"""

from __future__ import annotations

import gc
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
from kbuild.runtime.inference import Service
from kbuild.runtime.streaming.clients import Headers, client_logger, incoming_headers
from kbuild.runtime.streaming.microbatch import BatchHandler
from kbuild.runtime.settings.kafka import StreamConfig
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.model_watcher import ModelSlot
from kbuild.runtime.streaming.offsets import OffsetBook
from kbuild.runtime.streaming.records import RecordError, describe

COMMIT_INTERVAL_S = 0.5
LAG_INTERVAL_S = 2.0
IDLE_POLL_S = 0.1
SETTLE_STEP_S = 0.1
PAUSE_AFTER_S = 1.0
RETRY_BACKOFF_S = 0.5
REVOKE_FLUSH_S = 10.0
# Wait this long at start for the model watcher to replay the newest model.
REPLAY_WAIT_S = 30.0
MAX_ERROR_CHARS = 4096
# librdkafka error codes that still deserve another try when a delivery fails.
_TRANSIENT = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}

# topic, key, value, headers
_Output = tuple[str, bytes | None, bytes | None, Headers]


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
        self.book = OffsetBook()
        self._max_unacked = max(8 * config.max_batch_size, 5000)
        self._retries: deque[tuple[float, _Output]] = deque()  # (due, output)
        self._held: list[Message] = []  # consumed while settling
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
        self._producer = producer = Producer(
            {**self.config.producer_settings(), **common, "on_delivery": self._failed}
        )
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
                if not batch or now >= self._next_commit or len(producer) >= self._max_unacked:
                    self._next_commit = now + COMMIT_INTERVAL_S
                    # Also when nothing is new: a commit the broker refused is sent again.
                    if not self.book.unsettled or self._settle(None):
                        self._commit(asynchronous=True)
                if now >= self._next_lag:
                    self._next_lag = now + LAG_INTERVAL_S
                    self._measure_lag()
            self._drain()
        finally:
            consumer.close()
            producer.flush(0)

    def _collect(self, consumer: Consumer) -> list[Message]:
        """The first record waits up to IDLE_POLL_S; the batch then grows for
        at most max_latency_ms or to max_batch_size records."""
        if self._held:
            held, self._held = self._held, []
            return held
        first = consumer.poll(IDLE_POLL_S)
        if first is None:
            return []
        size = self.config.max_batch_size
        if size == 1:
            return [first]
        return [first, *consumer.consume(size - 1, self.config.max_latency_s)]

    def _process(self, batch: list[Message]) -> None:
        records = batch
        if not all(map(_no_error, batch)):
            records = []
            for msg in batch:
                err = msg.error()
                if err is None:
                    records.append(msg)
                else:
                    self._consumer_error(err)
            if not records:
                return
        outcomes = self.handler(list(map(Message.value, records)))
        book = self.book
        book.add(records, outcomes)
        # In consumption order, so each partition keeps its last offset.
        book.consumed.update(zip(map(Message.partition, records), map(Message.offset, records)))  # type: ignore[arg-type]
        assert self._producer is not None
        # Locals: this loop runs once per record.
        sink, produce, static = self.config.sink.topic, self._producer.produce, self._static_headers
        answered = 0
        for msg, outcome in zip(records, outcomes, strict=True):
            if type(outcome) is bytes:
                headers = static if not msg.headers() else self._output_headers(msg)
                refused = None
                try:
                    produce(sink, outcome, msg.key(), headers=headers)
                except BufferError:  # the client's queue is full: let it drain
                    refused = self._produce((sink, msg.key(), outcome, headers))
                except KafkaException as e:
                    refused = _kafka_error(e)
                if refused is None:
                    answered += 1
                else:  # refused before sending: too large, say
                    self._dead_letter(msg, "delivery", f"the output cannot be produced: {refused}")
            elif outcome is None:
                self.metrics.dropped += 1
            else:
                assert isinstance(outcome, RecordError)
                self._dead_letter(msg, outcome.stage, outcome.message)
        book.outputs += answered
        self.metrics.records_in += len(records)
        self.metrics.batch(len(records))

    # -- producing

    def _produce(self, output: _Output) -> str | None:
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
                return _kafka_error(e)

    def _failed(self, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of an output the broker did not take (the
        producer reports failures only)."""
        if err is None:
            return
        topic = msg.topic() or ""
        output: _Output = (topic, msg.key(), msg.value(), incoming_headers(msg))
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

    def _settled(self) -> None:
        """Everything produced so far is acknowledged: count it, and let the
        epoch's records be committed."""
        outputs, dead = self.book.settle()
        self.metrics.records_out += outputs
        self.metrics.dead_lettered += dead

    def _settle(self, limit: float | None) -> bool:
        """Wait until every output produced so far is acknowledged (failures
        produced again in the meantime); then the book's epoch is settled.
        False when `limit` seconds passed or the stream stops first."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        start = time.monotonic()
        paused: list[TopicPartition] = []
        try:
            while True:
                left = producer.flush(SETTLE_STEP_S)
                self._retry()
                if left == 0 and not self._retries and len(producer) == 0:
                    self._settled()
                    return True
                waited = time.monotonic() - start
                if (limit is not None and waited >= limit) or (limit is None and self.stopping.is_set()):
                    return False
                if waited >= PAUSE_AFTER_S:
                    if not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
                        self._warn("paused", unacknowledged=len(producer), action="waiting for the broker")
                    # Keeps this member in the group; what still arrives waits.
                    msg = consumer.poll(0)
                    if msg is not None:
                        self._held.append(msg)
        finally:
            if paused:
                consumer.resume(consumer.assignment())

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
        # serve.py froze the first model's objects out of the collector's
        # sight: one full pass collects what of the old model is cyclic, then
        # the new one is frozen in its turn (a pause at each update only).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._set_model(candidate.manifest.version)
        self.metrics.models_applied += 1
        log_event(self.log, "model-applied", version=candidate.manifest.version, id=candidate.manifest.id)

    # -- offsets, rebalances

    def _commit(self, asynchronous: bool, only: set[int] | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        topic = self.config.source.topic
        offsets = [TopicPartition(topic, p, o) for p, o in self.book.committable(only)]
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
            self.book.commit_failed(tp.partition, tp.offset)
        self._warn("commit-failed", error=str(err or bad[0].error), action="committing again")

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log_event(self.log, "partitions-assigned", partitions=_names(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before another replica takes them: let outputs in flight land and
        commit what is done, so the next owner repeats as little as possible."""
        keys = {tp.partition for tp in partitions}
        producer = self._producer
        if producer is not None and producer.flush(REVOKE_FLUSH_S) == 0 and not self._retries:
            self._settled()
            self._commit(asynchronous=False, only=keys)
        self._forget(keys)
        log_event(self.log, "partitions-revoked", partitions=_names(partitions))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({tp.partition for tp in partitions})
        log_event(self.log, "partitions-lost", level="warning", partitions=_names(partitions))

    def _forget(self, partitions: set[int]) -> None:
        self.book.revoke(partitions)
        self._held = [m for m in self._held if m.partition() not in partitions]

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
        """On stop: the grace period for outputs in flight, then a final
        commit of what they answered; what they did not is answered again by
        the partitions' next owner."""
        if self._settle(self.grace):
            self._commit(asynchronous=False)
        elif self.book.unsettled:
            log_event(
                self.log,
                "stopped-unsettled",
                level="warning",
                message="outputs still unacknowledged at stop; their records stay uncommitted and are answered again",
            )

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


def _kafka_error(e: KafkaException) -> str:
    error = e.args[0] if e.args else None
    return error.str() if isinstance(error, KafkaError) else str(e)


def _no_error(msg: Message) -> bool:
    return msg.error() is None


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
