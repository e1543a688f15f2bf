"""The streaming pieces that need no broker: model messages, their assembly and
verification, offset bookkeeping, encodings, record handling, Maki Nage
transforms, settings, and what the compiler plans for a Kafka pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbuild.runtime.contract.model_message import (
    Manifest,
    ModelMessageError,
    parse_chunk,
    read_key,
    sign,
)
from kbuild.runtime.streaming.model_assembly import Assembler, Refused, Verifier
from tests.helpers.streaming_units import KEY, manifest_for

# -- model messages


def test_manifest_round_trips_through_headers_and_signature_covers_it() -> None:
    m, chunks = manifest_for(b"x" * 2500, 1000)
    assert m.chunks == 3 and [len(c) for c in chunks] == [1000, 1000, 500]
    signature = sign(KEY, m)
    chunk = parse_chunk(m.headers(2, signature))
    assert chunk.manifest == m and chunk.index == 2 and chunk.signature == signature
    altered = Manifest(**{**m.__dict__, "version": "3"})
    assert sign(KEY, altered) != signature


@pytest.mark.parametrize(
    "headers, phrase",
    [
        ([], "not a kbuild model message"),
        ([("kbuild-model-format", b"9")], "format '9'"),
        ([("kbuild-model-format", b"1")], "without kbuild-model-id"),
    ],
)
def test_malformed_model_messages_are_named(headers: list[tuple[str, bytes]], phrase: str) -> None:
    with pytest.raises(ModelMessageError, match=phrase):
        parse_chunk(headers)


def test_a_chunk_index_outside_the_model_is_refused() -> None:
    m, _ = manifest_for(b"abc", 10)
    headers = [(k, v) for k, v in m.headers(0, None) if k != "kbuild-model-chunk"]
    with pytest.raises(ModelMessageError, match="chunk 5 of a model in 1"):
        parse_chunk([*headers, ("kbuild-model-chunk", b"5")])


def test_key_files_ignore_a_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("secret\n")
    (tmp_path / "b").write_bytes(b"secret")
    assert read_key(tmp_path / "a") == read_key(tmp_path / "b") == KEY
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_key(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        read_key(tmp_path / "missing")


# -- assembly and verification


def feed_all(assembler: Assembler, m: Manifest, chunks: list[bytes], signature: str | None) -> Any:
    result = None
    for i, data in enumerate(chunks):
        result = assembler.feed(parse_chunk(m.headers(i, signature)), data, 100 + i)
    return result


def test_chunks_assemble_into_the_verified_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    m, chunks = manifest_for(data, 1000)
    done = feed_all(Assembler(tmp_path, Verifier(KEY, False)), m, chunks, sign(KEY, m))
    assert done.path.read_bytes() == data and done.path.name == "model.onnx"
    assert done.offset == 100 + len(chunks) - 1


@pytest.mark.parametrize(
    "key, allow_unsigned, signature, reason",
    [
        (KEY, False, None, "unsigned"),
        (KEY, False, "0" * 64, "bad signature"),
        (None, False, "sign", "no key"),
    ],
)
def test_refused_models_are_refused_at_the_first_chunk(
    tmp_path: Path, key: bytes | None, allow_unsigned: bool, signature: str | None, reason: str
) -> None:
    m, chunks = manifest_for(b"y" * 3000, 1000)
    if signature == "sign":
        signature = sign(KEY, m)
    assembler = Assembler(tmp_path, Verifier(key, allow_unsigned))
    with pytest.raises(Refused, match=reason):
        assembler.feed(parse_chunk(m.headers(0, signature)), chunks[0], 0)
    assert not any(tmp_path.iterdir())  # nothing of it was written
    # its later chunks are skipped quietly: one refusal per model
    assert assembler.feed(parse_chunk(m.headers(1, signature)), chunks[1], 1) is None


def test_unsigned_models_pass_only_when_allowed(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"z" * 10, 4)
    assert feed_all(Assembler(tmp_path, Verifier(None, True)), m, chunks, None) is not None


def test_altered_content_and_gaps_are_refused(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"w" * 3000, 1000)
    signature = sign(KEY, m)
    assembler = Assembler(tmp_path / "a", Verifier(KEY, False))
    with pytest.raises(Refused, match="does not match its sha256"):
        feed_all(assembler, m, [chunks[0], chunks[1], b"X" * 1000], signature)
    assembler = Assembler(tmp_path / "b", Verifier(KEY, False))
    assembler.feed(parse_chunk(m.headers(0, signature)), chunks[0], 0)
    with pytest.raises(Refused, match="chunk 2 arrived where chunk 1 was due"):
        assembler.feed(parse_chunk(m.headers(2, signature)), chunks[2], 2)


def test_a_chunk_whose_start_was_not_read_is_ignored(tmp_path: Path) -> None:
    m, chunks = manifest_for(b"v" * 3000, 1000)
    assembler = Assembler(tmp_path, Verifier(KEY, False))
    assert assembler.feed(parse_chunk(m.headers(1, sign(KEY, m))), chunks[1], 5) is None
