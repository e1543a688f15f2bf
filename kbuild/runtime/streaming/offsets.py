"""Which offsets may be committed: at-least-once bookkeeping.

The broker acknowledges outputs in bulk, not one by one: the producer reports
only the deliveries that failed, and the stream commits after the producer's
queue has drained (every output produced so far acknowledged, or failed and
produced again). At that point every record consumed before the wait is
answered, so its offset may be committed: a record is never committed before
what it produced is safely on the broker, and a crash can repeat records but
never lose one. Kafka Streams commits the same way (flush, then commit); a
callback per output would cost more than the rest of the record's path.

Until then the book keeps the epoch's records and outcomes, so that an output
the broker refuses for good can still send its input to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class OffsetBook:
    def __init__(self) -> None:
        # partition -> offset of the last record consumed since the last
        # settle; the stream writes it directly (it is on the per-record path).
        self.consumed: dict[int, int] = {}
        self._done: dict[int, int] = {}  # partition -> next offset to commit
        self._sent: dict[int, int] = {}  # partition -> last offset sent in a commit
        self._epoch: list[tuple[Sequence[Any], Sequence[Any]]] = []  # (records, outcomes)
        self.outputs = 0  # produced this epoch and not reported failed
        self.dead_letters = 0

    @property
    def unsettled(self) -> bool:
        return bool(self.consumed) or self.outputs > 0 or self.dead_letters > 0

    def add(self, records: Sequence[Any], outcomes: Sequence[Any]) -> None:
        self._epoch.append((records, outcomes))

    def find(self, key: bytes | None, value: bytes | None) -> Any | None:
        """The consumed record of this epoch whose output had this key and value."""
        for records, outcomes in self._epoch:
            for record, outcome in zip(records, outcomes, strict=True):
                if outcome == value and record.key() == key:
                    return record
        return None

    def settle(self) -> tuple[int, int]:
        """Everything produced so far is acknowledged: the epoch's records
        become committable. Returns the epoch's (outputs, dead letters)."""
        self._done.update((p, offset + 1) for p, offset in self.consumed.items())
        self.consumed = {}
        self._epoch = []
        counts = (self.outputs, self.dead_letters)
        self.outputs = self.dead_letters = 0
        return counts

    def committable(self, only: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """(partition, next offset) for every settled partition (of `only`)
        whose offset moved since the last commit sent; marks them sent."""
        keys = list(self._done) if only is None else [p for p in only if p in self._done]
        out = []
        for partition in keys:
            done = self._done[partition]
            if self._sent.get(partition) != done:
                self._sent[partition] = done
                out.append((partition, done))
        return out

    def committed(self) -> dict[int, int]:
        """partition -> the next offset in the last commit sent for it."""
        return dict(self._sent)

    def commit_failed(self, partition: int, offset: int) -> None:
        """A commit the broker refused is sent again with the next one."""
        if self._sent.get(partition) == offset:
            del self._sent[partition]

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget partitions handed to another replica: what was not committed
        is answered again by the next owner."""
        for partition in partitions:
            self.consumed.pop(partition, None)
            self._done.pop(partition, None)
            self._sent.pop(partition, None)
