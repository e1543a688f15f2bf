"""The streaming pieces that need no broker: model messages, their assembly and
verification, offset bookkeeping, encodings, record handling, Maki Nage
transforms, settings, and what the compiler plans for a Kafka pipeline."""

from __future__ import annotations

from kbuild.runtime.streaming.offsets import OffsetBook

# -- offsets


class Record:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def key(self) -> bytes:
        return self._key


def test_offsets_become_committable_only_when_settled() -> None:
    book = OffsetBook()
    book.consumed.update({0: 4, 1: 2})  # the last offsets consumed
    assert book.unsettled and book.committable() == []  # consumed is not answered
    book.outputs, book.dead_letters = 7, 1
    assert book.settle() == (7, 1)
    assert not book.unsettled
    assert sorted(book.committable()) == [(0, 5), (1, 3)]
    assert book.committable() == []  # sent already
    book.commit_failed(1, 3)
    assert book.committable() == [(1, 3)]  # sent again
    book.consumed[0] = 9
    book.revoke([0])
    book.settle()
    assert book.committable() == []  # the next owner answers partition 0 again


def test_a_revoked_partition_commits_alone() -> None:
    book = OffsetBook()
    book.consumed.update({0: 1, 1: 2})
    book.settle()
    assert book.committable([1]) == [(1, 3)]
    assert book.committable() == [(0, 2)]  # still due, not marked sent


def test_a_refused_output_finds_its_input_until_settled() -> None:
    book = OffsetBook()
    records = [Record(b"a"), Record(b"b"), Record(b"c")]
    book.add(records, [b"out", None, b"out"])
    assert book.find(b"c", b"out") is records[2]
    assert book.find(b"b", b"out") is None  # dropped: it had no output
    book.settle()
    assert book.find(b"c", b"out") is None
