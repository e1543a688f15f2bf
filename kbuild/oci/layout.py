"""OCI image layouts (and Docker's `docker save` archives): written as one
deterministic tar, read from a folder or a tar.

The tar kbuild writes is an OCI image layout (oci-layout, index.json,
blobs/sha256/...) that skopeo and podman read as `oci-archive:PATH`; for a
single image it also holds Docker's manifest.json, so that `docker load`
(any engine version) reads the same file.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from kbuild.oci.blobs import CONFIG, INDEX, INDEXES, BlobStore, Descriptor, canonical_json
from kbuild.oci.image import Image
from kbuild.oci.layers import FileEntry, write_tar

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class LayoutError(Exception):
    """A layout or archive that cannot be read as an image; says what and where."""


def _tag_of(reference: str) -> str:
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def write_layout(
    dest: Path,
    store: BlobStore,
    top: Descriptor,
    blobs: list[Descriptor],
    reference: str | None,
    docker_image: Image | None = None,
) -> None:
    """Write an OCI image layout tar at `dest` holding `blobs` (from the store)
    with `top` (a manifest or an index) as its one entry. With `docker_image`,
    also Docker's manifest.json for `docker load`."""
    annotations = dict(top.annotations)
    if reference:
        annotations[REF_NAME] = _tag_of(reference)
        annotations[CONTAINERD_NAME] = reference
    entry = Descriptor(top.media_type, top.digest, top.size, top.platform, annotations)
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry.as_dict()]}
    entries = [
        FileEntry("oci-layout", canonical_json(LAYOUT_VERSION)),
        FileEntry("index.json", canonical_json(index)),
    ]
    if docker_image is not None:
        docker = [
            {
                "Config": f"blobs/sha256/{docker_image.config_descriptor.hex}",
                "RepoTags": [reference] if reference else [],
                "Layers": [f"blobs/sha256/{layer.hex}" for layer in docker_image.layers],
            }
        ]
        entries.append(FileEntry("manifest.json", canonical_json(docker)))
    seen = {d.digest for d in [*blobs, top]}
    entries += [FileEntry(f"blobs/sha256/{d.split(':', 1)[1]}", store.path(d)) for d in sorted(seen)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as out:
        write_tar(out, entries)
    tmp.replace(dest)


class _Files(Protocol):
    where: str

    def has(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


@dataclass
class _Folder:
    root: Path
    where: str

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        return (self.root / name).open("rb")


class _Archive:
    def __init__(self, tar: tarfile.TarFile, where: str) -> None:
        self.tar = tar
        self.where = where
        self.members = {
            str(PurePosixPath(m.name.lstrip("./") or ".")): m for m in tar.getmembers() if m.isfile() or m.issym()
        }

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        data = self.tar.extractfile(self.members[name])
        if data is None:
            raise LayoutError(f"{self.where}: {name} is not a file")
        return data


@contextmanager
def open_source(path: Path, archive: bool) -> Iterator[_Files]:
    """The files of a layout folder or of a tar (an OCI archive or `docker save` output)."""
    if not archive:
        if not path.is_dir():
            raise LayoutError(f"{path}: no such folder")
        yield _Folder(path, str(path))
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            yield _Archive(tar, str(path))
    except (tarfile.TarError, OSError) as error:
        raise LayoutError(f"{path}: cannot read the archive: {error}") from None


def _json(files: _Files, name: str) -> Any:
    if not files.has(name):
        raise LayoutError(f"{files.where}: has no {name}")
    with files.open(name) as data:
        try:
            return json.loads(data.read())
        except ValueError as error:
            raise LayoutError(f"{files.where}: {name} is not JSON: {error}") from None


def _blob_name(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"blobs/{algorithm}/{hex_part}"


def copy_blob(files: _Files, store: BlobStore, descriptor: Descriptor) -> None:
    if store.has(descriptor.digest):
        return
    name = _blob_name(descriptor.digest)
    if not files.has(name):
        raise LayoutError(f"{files.where}: blob {descriptor.digest} is missing")
    with files.open(name) as data:
        try:
            store.put_stream(data, descriptor.media_type, expect=descriptor.digest)
        except ValueError as error:
            raise LayoutError(f"{files.where}: {error}") from None


def read_layout_entries(files: _Files, store: BlobStore, ref: str | None) -> Descriptor:
    """The layout's entry (a manifest or index) named `ref` (or its only one),
    with that blob copied into the store."""
    index = _json(files, "index.json")
    entries = [Descriptor.from_dict(m) for m in index.get("manifests") or []]
    if ref:
        chosen = [e for e in entries if ref in (e.annotations.get(REF_NAME), e.annotations.get(CONTAINERD_NAME))]
    else:
        chosen = entries
    if len(chosen) != 1:
        names = sorted(str(e.annotations.get(REF_NAME, e.digest)) for e in entries)
        wanted = f"no image named {ref!r}" if ref else f"{len(entries)} images, and no name was given"
        raise (
            LayoutError(
                f"{files.where}: {wanted}",
            )
            if not names
            else LayoutError(f"{files.where}: {wanted}; it has {', '.join(names)}")
        )
    copy_blob(files, store, chosen[0])
    return chosen[0]


def is_index(store: BlobStore, descriptor: Descriptor) -> bool:
    if descriptor.media_type in INDEXES:
        return True
    document = json.loads(store.read(descriptor.digest))
    return "manifests" in document and "layers" not in document


def read_docker_archive(files: _Files, store: BlobStore, ref: str | None) -> tuple[bytes, Mapping[str, Any]]:
    """(config bytes, the image's docker manifest entry) from `docker save` output,
    its config and layers copied into the store."""
    manifest = _json(files, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise LayoutError(f"{files.where}: manifest.json lists no image")
    entries = [m for m in manifest if not ref or ref in (m.get("RepoTags") or [])]
    if len(entries) != 1:
        tags = sorted(t for m in manifest for t in m.get("RepoTags") or [])
        raise LayoutError(
            f"{files.where}: cannot tell which image to take; it has {', '.join(tags) or 'untagged ones'}"
        )
    entry = entries[0]
    with files.open(entry["Config"]) as data:
        config = data.read()
    store.put(config, CONFIG)
    return config, entry
