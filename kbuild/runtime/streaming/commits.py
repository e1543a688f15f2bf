"""Settling and committing: offsets are committed once every output before
them is acknowledged (at-least-once); rebalances hand partitions on with what
is done committed; lag is measured for the metrics."""

from __future__ import annotations

import time

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from kbuild.runtime.log import log_event
from kbuild.runtime.streaming.delivery import Delivery
from kbuild.runtime.streaming.metrics import measure_lags

SETTLE_STEP_S = 0.1
PAUSE_AFTER_S = 1.0
REVOKE_FLUSH_S = 10.0
COMMITTED_QUERY_S = 2.0


class Commits(Delivery):
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
        for partition in partitions:
            self._group_offsets.pop(partition, None)
        self._held = [m for m in self._held if m.partition() not in partitions]

    def _measure_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        ends, positions = {}, {}
        for tp in consumer.position(assignment) if assignment else []:
            _, high = consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            ends[(tp.topic, tp.partition)], positions[(tp.topic, tp.partition)] = high, tp.offset
        ours = self.book.committed()  # what this replica committed since the partition came to it
        unknown = [tp for tp in assignment if tp.partition not in ours and tp.partition not in self._group_offsets]
        if unknown:  # once per assignment: the offset the group had committed before
            try:
                for tp in consumer.committed(unknown, timeout=COMMITTED_QUERY_S):
                    self._group_offsets[tp.partition] = tp.offset
            except KafkaException:
                pass  # asked again at the next measurement
        committed = {
            (tp.topic, tp.partition): ours.get(tp.partition, self._group_offsets.get(tp.partition, -1))
            for tp in assignment
        }
        self.metrics.set_lag(measure_lags(ends, positions, committed))

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


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
