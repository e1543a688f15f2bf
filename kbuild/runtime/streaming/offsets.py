"""Which offsets may be committed: at-least-once bookkeeping.

Every consumed record gets an Entry that counts the outputs still waiting for
the broker's acknowledgement (an output, or a dead-letter record; none for a
dropped record). Per partition, the committable offset is one past the longest
prefix of consumed records whose entries reached zero: a record is never
committed before everything it produced is safely on the broker, so a crash
can repeat records but never lose one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

Partition = tuple[str, int]  # (topic, partition)


class Entry:
    __slots__ = ("live", "message", "offset", "pending")

    def __init__(self, offset: int, message: Any) -> None:
        self.offset = offset
        self.pending = 0
        # The consumed message, kept until acknowledged: a failed output can
        # still send the original to the dead-letter topic.
        self.message = message
        # False once the partition is revoked: late acknowledgements and
        # retries for it no longer matter (the next owner repeats the record).
        self.live = True


class OffsetTracker:
    def __init__(self) -> None:
        self._entries: dict[Partition, deque[Entry]] = {}
        self._done: dict[Partition, int] = {}  # next offset to commit
        self._sent: dict[Partition, int] = {}  # last offset sent in a commit
        self.in_flight = 0

    def add(self, topic: str, partition: int, offset: int, message: Any = None) -> Entry:
        entry = Entry(offset, message)
        self._entries.setdefault((topic, partition), deque()).append(entry)
        self.in_flight += 1
        return entry

    def committable(self, only: Iterable[Partition] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for every partition (of `only`)
        whose done prefix grew since the last commit that was sent; marks
        them sent."""
        out = []
        keys = self._entries if only is None else [k for k in only if k in self._entries]
        for key in keys:
            entries = self._entries[key]
            last = None
            while entries and entries[0].pending == 0:
                last = entries.popleft().offset
                self.in_flight -= 1
            if last is not None:
                self._done[key] = last + 1
            done = self._done.get(key)
            if done is not None and self._sent.get(key) != done:
                self._sent[key] = done
                out.append((key[0], key[1], done))
        return out

    def commit_failed(self, topic: str, partition: int, offset: int) -> None:
        """A commit the broker refused is sent again with the next one."""
        if self._sent.get((topic, partition)) == offset:
            del self._sent[(topic, partition)]

    def revoke(self, partitions: Iterable[Partition]) -> None:
        for key in partitions:
            for entry in self._entries.pop(key, ()):
                entry.live = False
                self.in_flight -= 1
            self._done.pop(key, None)
            self._sent.pop(key, None)

    def partitions(self) -> list[Partition]:
        return list(self._entries)
