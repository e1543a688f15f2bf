"""Content-addressed blobs and the descriptors that name them.

Every blob kbuild writes or pulls (layers, configs, manifests, base images'
layers) lives once in the cache, under its sha256, so that builds share them
and a rebuild writes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MANIFESTS = (MANIFEST, DOCKER_MANIFEST)
INDEXES = (INDEX, DOCKER_LIST)
GZIP_LAYERS = (LAYER_GZIP, DOCKER_LAYER_GZIP)
LAYERS = (LAYER_GZIP, LAYER_TAR, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR)
_CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON document: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # sha256:HEX
    size: int
    platform: Mapping[str, str] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            found["platform"] = dict(self.platform)
        if self.annotations:
            found["annotations"] = dict(self.annotations)
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data["size"]),
            platform=data.get("platform"),
            annotations=dict(data.get("annotations") or {}),
        )

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


def check_digest(digest: str) -> str:
    """The hex part of a sha256 digest; ValueError for anything else (never a path)."""
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hex_part


class BlobStore:
    """Blobs under ROOT/sha256/HEX, written atomically, verified on the way in."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / check_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(data)
        if not self.has(digest):
            with self.writer() as (out, finish):
                out.write(data)
                finish(digest)
        return Descriptor(media_type, digest, len(data))

    def put_json(self, value: Any, media_type: str) -> tuple[Descriptor, bytes]:
        data = canonical_json(value)
        return self.put(data, media_type), data

    def put_stream(self, source: IO[bytes], media_type: str, expect: str | None = None) -> Descriptor:
        """Copy `source` in; with `expect`, refuse bytes whose digest differs."""
        digest = hashlib.sha256()
        size = 0
        with self.writer() as (out, finish):
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            found = "sha256:" + digest.hexdigest()
            if expect is not None and found != expect:
                raise ValueError(f"blob {expect} arrived as {found}: the source is damaged or not what it claims")
            finish(found)
        return Descriptor(media_type, found, size)

    @contextmanager
    def writer(self) -> Iterator[tuple[IO[bytes], Any]]:
        """(file to write, finish(digest)): nothing lands under its name unless finished."""
        folder = self.root / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=folder)
        done: list[str] = []
        try:
            with os.fdopen(fd, "wb") as out:
                yield out, done.append
            if done:
                os.replace(tmp, self.path(done[0]))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def copy_to(self, digest: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(digest), dest)
