"""Publish a model version to a model topic (`kbuild publish-model`).

The model is signed with HMAC-SHA256 over its manifest (the key from
--key-file), split into chunks that fit a Kafka message and produced, in order,
to partition 0 of the topic; the message format is the runtime's
(kbuild/runtime/contract/model_message.py). Returns once the broker acknowledged
every chunk; raises PublishError otherwise, so that exit 0 means "replicas can
read it".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kbuild.errors import KbuildError, UsageError
from kbuild.runtime.contract.model_message import (
    DEFAULT_CHUNK_BYTES,
    KeyFileError,
    Manifest,
    ModelMessageError,
    check_name,
    check_version,
    read_key,
    sha256_of,
    sign,
    split,
)

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

DEFAULT_TIMEOUT_S = 30.0
# Room for the headers beside a full chunk in one message.
_HEADER_ROOM = 16 * 1024


class PublishError(KbuildError):
    """The broker could not be reached or did not acknowledge the model."""

    exit_code = 7


@dataclass(frozen=True)
class Published:
    manifest: Manifest
    signed: bool
    offsets: tuple[int, ...]


def publish_model(
    bootstrap_servers: str,
    topic: str,
    version: str,
    model: Path,
    key_file: Path | None = None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Published:
    # Imported here: every other kbuild command would pay for loading the client.
    from confluent_kafka import Producer

    manifest, chunks, key = _prepare(version, model, key_file, chunk_bytes)
    signature = sign(key, manifest) if key is not None else None
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            # Chunks land once each and in order, even when the client retries.
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": max(1_000_000, chunk_bytes + _HEADER_ROOM),
            "message.timeout.ms": int(timeout_s * 1000),
            "client.id": "kbuild-publish-model",
            # Connection failures are reported once, below, not by the client's log.
            "log_level": 0,
        }
    )
    _check_reachable(producer, bootstrap_servers, timeout_s)
    reports: list[tuple[int, KafkaError | None, int | None]] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, msg: Message) -> None:
            reports.append((index, err, msg.offset()))

        return report

    for index, data in enumerate(chunks):
        producer.produce(
            topic,
            data,
            manifest.id.encode(),
            partition=0,
            headers=list(manifest.headers(index, signature)),
            on_delivery=delivered(index),
        )
    left = producer.flush(timeout_s)
    failures = sorted((i, err) for i, err, _ in reports if err is not None)
    if failures:
        index, err = failures[0]
        raise PublishError(
            f"the broker at {bootstrap_servers} did not accept chunk {index + 1} of {len(chunks)} "
            f"on topic {topic!r}: {_describe(err)}"
        )
    if left or len(reports) < len(chunks):
        raise PublishError(
            f"the broker at {bootstrap_servers} did not acknowledge {len(chunks) - len(reports)} of "
            f"{len(chunks)} messages on topic {topic!r} within {timeout_s:g} s"
        )
    offsets = tuple(o for _, _, o in sorted(reports, key=lambda r: r[0]) if o is not None)
    return Published(manifest, signature is not None, offsets)


def _prepare(
    version: str, model: Path, key_file: Path | None, chunk_bytes: int
) -> tuple[Manifest, list[bytes], bytes | None]:
    if chunk_bytes < 1:
        raise UsageError("--chunk-size must be a positive number of bytes")
    try:
        check_version(version)
        check_name(model.name)
    except ModelMessageError as e:
        raise UsageError(str(e)) from None
    if model.is_dir():
        raise UsageError(f"{model} is a folder: publish one file (a zip of the folder for MLflow models)")
    try:
        data = model.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the model {model}: {e.strerror or e}") from None
    key = None
    if key_file is not None:
        try:
            key = read_key(key_file)
        except KeyFileError as e:
            raise UsageError(str(e)) from None
    chunks = split(data, chunk_bytes)
    manifest = Manifest(
        id=uuid.uuid4().hex,
        version=version,
        name=model.name,
        sha256=sha256_of(chunks),
        size=len(data),
        chunks=len(chunks),
        published_at_ms=int(time.time() * 1000),
    )
    return manifest, chunks, key


def _check_reachable(producer: Producer, servers: str, timeout_s: float) -> None:
    """A broker that does not answer fails here with its address, rather than
    after the whole timeout with a generic delivery error."""
    from confluent_kafka import KafkaException

    try:
        producer.list_topics(timeout=min(timeout_s, 10.0))
    except KafkaException as e:
        raise PublishError(f"cannot reach a Kafka broker at {servers}: {_describe(e.args[0])}") from None


def _describe(err: object) -> str:
    describe = getattr(err, "str", None)  # a KafkaError
    return str(describe()) if callable(describe) else str(err)
