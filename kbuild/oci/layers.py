"""Layers written so that the same files give the same bytes, on any machine
and at any time: entries sorted, every parent folder present, owners root,
modes fixed (0755 folders and executables, 0644 the rest), times
SOURCE_DATE_EPOCH (default 0), no times in PAX headers, gzip with no name and
no time at a fixed level.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kbuild.oci.blobs import LAYER_GZIP, BlobStore, Descriptor

GZIP_LEVEL = 6
_DEFAULT_EPOCH = 0
_CHUNK = 1 << 20


def layer_epoch() -> int:
    """Entry times: SOURCE_DATE_EPOCH when set, else 0 (ko and jib do the same)."""
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", _DEFAULT_EPOCH)), 0)


@dataclass(frozen=True)
class FileEntry:
    """One regular file of a layer: its path in the image (no leading /) and its bytes."""

    path: str
    source: Path | bytes
    executable: bool = False

    @classmethod
    def from_file(cls, image_path: str, source: Path) -> FileEntry:
        return cls(image_path, source, bool(source.stat().st_mode & 0o111))


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor  # the gzip blob
    diff_id: str  # sha256 of the uncompressed tar, what the config's rootfs lists
    files: int
    tar_bytes: int


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes to `inner`."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)


def tree_entries(prefix: str, folder: Path) -> list[FileEntry]:
    """Every regular file under `folder`, at PREFIX/relative path."""
    return [
        FileEntry.from_file(f"{prefix}/{p.relative_to(folder).as_posix()}", p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]


def _folders(paths: Iterable[str]) -> set[str]:
    return {"/".join(parts[:i]) for p in paths for parts in [p.split("/")] for i in range(1, len(parts))}


def write_tar(
    out: IO[bytes], entries: Iterable[FileEntry], *, mtime: int | None = None, folders: Iterable[str] = ()
) -> int:
    """A tar whose bytes depend on the entries only (a layer's, uncompressed;
    also the build context's); the number of files. `folders`: ones to hold
    even where no file lies in them."""
    files = {e.path.strip("/"): e for e in entries}
    mtime = layer_epoch() if mtime is None else mtime
    names = _folders(files) | set(folders)
    rows = sorted([(name, None) for name in names] + list(files.items()), key=lambda r: r[0])
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for name, entry in rows:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.mode = 0o755 if entry.executable else 0o644
            if isinstance(entry.source, bytes):
                info.size = len(entry.source)
                tar.addfile(info, io.BytesIO(entry.source))
            else:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as data:
                    tar.addfile(info, data)
    return len(files)


def write_layer(store: BlobStore, entries: Iterable[FileEntry]) -> Layer:
    """Write the entries as a gzip layer blob into `store`."""
    with store.writer() as (blob, finish):
        compressed = _Hashing(blob)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=compressed, mtime=0) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            count = write_tar(plain, entries)  # type: ignore[arg-type]
        digest = "sha256:" + compressed.sha256.hexdigest()
        finish(digest)
    return Layer(
        Descriptor(LAYER_GZIP, digest, compressed.size), "sha256:" + plain.sha256.hexdigest(), count, plain.size
    )


def diff_id_of(store: BlobStore, descriptor: Descriptor) -> str:
    """The sha256 of a layer blob once uncompressed."""
    digest = hashlib.sha256()
    with open_layer(store, descriptor) as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def open_layer(store: BlobStore, descriptor: Descriptor) -> IO[bytes]:
    """The layer's tar stream, whatever its compression (gzip or none)."""
    path = store.path(descriptor.digest)
    with path.open("rb") as head:
        magic = head.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")
