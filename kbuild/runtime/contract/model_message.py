"""The model message: how a model version travels on the model topic.

A model of S bytes is published as N = ceil(S / chunk size) messages to
partition 0 of the model topic, in order. Every message carries the whole
manifest in its headers, so any one of them says which model it belongs to:

    kbuild-model-format        "1"
    kbuild-model-id            random hex, one per publication
    kbuild-model-version       the version the publisher gave
    kbuild-model-name          the model's file name (its suffix tells the loader the format)
    kbuild-model-sha256        sha256 of the whole model
    kbuild-model-size          S
    kbuild-model-chunks        N
    kbuild-model-published-at  milliseconds since the epoch, at the publisher
    kbuild-model-chunk         this message's index, 0 … N-1
    kbuild-model-signature     hex HMAC-SHA256 of the manifest (absent: unsigned)

The signature covers the manifest, sha256 included, so a replica checks it on
the first chunk (and never buffers an unsigned model) and checks the hash once
the model is complete. The manifest holds no secret: the key is shared out of
band, through the file named by KBUILD_MODEL_KEY_FILE on every replica.

Standard library only: the compiler's publisher imports this module too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMAT = "1"
PREFIX = "kbuild-model-"
H_FORMAT = PREFIX + "format"
H_ID = PREFIX + "id"
H_VERSION = PREFIX + "version"
H_NAME = PREFIX + "name"
H_SHA256 = PREFIX + "sha256"
H_SIZE = PREFIX + "size"
H_CHUNKS = PREFIX + "chunks"
H_PUBLISHED = PREFIX + "published-at"
H_CHUNK = PREFIX + "chunk"
H_SIGNATURE = PREFIX + "signature"

KEY_FILE_ENV = "KBUILD_MODEL_KEY_FILE"
# Below the 1 MB default message limit of brokers and clients, with room for headers.
DEFAULT_CHUNK_BYTES = 512 * 1024
MAX_VERSION_CHARS = 128

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Headers = Sequence[tuple[str, bytes | str | None]]


class ModelMessageError(ValueError):
    """A message on the model topic that is not a well-formed model chunk."""


class KeyFileError(ValueError):
    """The signing key file is missing, unreadable or empty."""


@dataclass(frozen=True)
class Manifest:
    id: str
    version: str
    name: str
    sha256: str
    size: int
    chunks: int
    published_at_ms: int

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ModelMessageError(f"model id {self.id!r} is not 8-64 lower-case hex digits")
        check_version(self.version)
        check_name(self.name)
        if not _SHA256.match(self.sha256):
            raise ModelMessageError(f"sha256 {self.sha256!r} is not 64 lower-case hex digits")
        if self.size < 0 or self.chunks < 1 or self.chunks > max(1, self.size):
            raise ModelMessageError(f"{self.chunks} chunks cannot hold {self.size} bytes")
        if self.published_at_ms < 0:
            raise ModelMessageError("published-at must not be negative")

    def canonical(self) -> bytes:
        """The bytes the signature covers: every field, in a fixed order,
        none of which can contain a newline (checked on construction)."""
        fields = (
            ("format", FORMAT),
            ("id", self.id),
            ("version", self.version),
            ("name", self.name),
            ("sha256", self.sha256),
            ("size", str(self.size)),
            ("chunks", str(self.chunks)),
            ("published-at", str(self.published_at_ms)),
        )
        return "".join(f"{k}={v}\n" for k, v in fields).encode("utf-8")

    def headers(self, index: int, signature: str | None) -> list[tuple[str, bytes]]:
        headers = [
            (H_FORMAT, FORMAT),
            (H_ID, self.id),
            (H_VERSION, self.version),
            (H_NAME, self.name),
            (H_SHA256, self.sha256),
            (H_SIZE, str(self.size)),
            (H_CHUNKS, str(self.chunks)),
            (H_PUBLISHED, str(self.published_at_ms)),
            (H_CHUNK, str(index)),
        ]
        if signature is not None:
            headers.append((H_SIGNATURE, signature))
        return [(k, v.encode("utf-8")) for k, v in headers]


@dataclass(frozen=True)
class Chunk:
    manifest: Manifest
    index: int
    signature: str | None


def check_version(version: str) -> None:
    if not version or len(version) > MAX_VERSION_CHARS or not version.isprintable():
        raise ModelMessageError(f"version {version!r} must be 1-{MAX_VERSION_CHARS} printable characters")


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ModelMessageError(
            f"model file name {name!r} must be letters, digits, '.', '_' and '-' "
            "(not starting with '.'), at most 255 characters"
        )


def parse_chunk(headers: Headers | None) -> Chunk:
    """The manifest, chunk index and signature of one model-topic message."""
    values: dict[str, str] = {}
    for key, value in headers or ():
        if key.startswith(PREFIX) and value is not None:
            try:
                values[key] = value.decode("utf-8") if isinstance(value, bytes) else value
            except UnicodeDecodeError:
                raise ModelMessageError(f"header {key} is not UTF-8") from None
    if H_FORMAT not in values:
        raise ModelMessageError("not a kbuild model message (no kbuild-model-format header)")
    if values[H_FORMAT] != FORMAT:
        raise ModelMessageError(f"model message format {values[H_FORMAT]!r}; this runtime reads format {FORMAT}")
    missing = [
        h for h in (H_ID, H_VERSION, H_NAME, H_SHA256, H_SIZE, H_CHUNKS, H_PUBLISHED, H_CHUNK) if h not in values
    ]
    if missing:
        raise ModelMessageError(f"model message without {', '.join(missing)}")
    try:
        manifest = Manifest(
            id=values[H_ID],
            version=values[H_VERSION],
            name=values[H_NAME],
            sha256=values[H_SHA256],
            size=int(values[H_SIZE]),
            chunks=int(values[H_CHUNKS]),
            published_at_ms=int(values[H_PUBLISHED]),
        )
        index = int(values[H_CHUNK])
    except ValueError as e:
        if isinstance(e, ModelMessageError):
            raise
        raise ModelMessageError(f"malformed model message header: {e}") from None
    if not 0 <= index < manifest.chunks:
        raise ModelMessageError(f"chunk {index} of a model in {manifest.chunks} chunks")
    return Chunk(manifest, index, values.get(H_SIGNATURE))


def sign(key: bytes, manifest: Manifest) -> str:
    return hmac.new(key, manifest.canonical(), hashlib.sha256).hexdigest()


def signature_ok(key: bytes, manifest: Manifest, signature: str) -> bool:
    return hmac.compare_digest(sign(key, manifest), signature)


def read_key(path: Path) -> bytes:
    """The shared signing key: the file's bytes without trailing whitespace,
    so that `echo secret > key` and a key written without a newline agree."""
    try:
        key = path.read_bytes().rstrip()
    except OSError as e:
        raise KeyFileError(f"cannot read the key file {path}: {e.strerror or e}") from None
    if not key:
        raise KeyFileError(f"the key file {path} is empty")
    return key


def split(data: bytes, chunk_bytes: int) -> list[bytes]:
    """At least one chunk, so that an empty model is still a message."""
    if chunk_bytes < 1:
        raise ValueError("chunk size must be positive")
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]


def sha256_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
