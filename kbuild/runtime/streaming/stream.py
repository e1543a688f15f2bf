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
from typing import TextIO

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from kbuild.runtime.contract.kafka import StreamConfig
from kbuild.runtime.inference import Service
from kbuild.runtime.log import log_event
from kbuild.runtime.streaming.clients import Headers, client_logger
from kbuild.runtime.streaming.commits import Commits
from kbuild.runtime.streaming.delivery import kafka_error
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.microbatch import BatchHandler
from kbuild.runtime.streaming.model_watcher import ModelSlot
from kbuild.runtime.streaming.offsets import OffsetBook
from kbuild.runtime.streaming.records import RecordError, describe
from kbuild.runtime.streaming.stream_state import Output

COMMIT_INTERVAL_S = 0.5
LAG_INTERVAL_S = 2.0
IDLE_POLL_S = 0.1
# Wait this long at start for the model watcher to replay the newest model.
REPLAY_WAIT_S = 30.0


class Stream(Commits):
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
        self._retries: deque[tuple[float, Output]] = deque()  # (due, output)
        self._held: list[Message] = []  # consumed while settling
        self._group_offsets: dict[int, int] = {}
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
        self._producer = producer = Producer({**self.config.producer_settings(), **common, "on_delivery": self._failed})
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
        book.consumed.update(zip(map(Message.partition, records), map(Message.offset, records), strict=True))  # type: ignore[arg-type]
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
                    refused = kafka_error(e)
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


def _no_error(msg: Message) -> bool:
    return msg.error() is None
