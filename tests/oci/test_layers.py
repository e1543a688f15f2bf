"""Layers: the same files give the same bytes, whatever the files' times and
where they lie; entries sorted, with parents, owners root, no times beyond
SOURCE_DATE_EPOCH, gzip with no name and no time."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from kbuild.oci.blobs import BlobStore
from kbuild.oci.layers import FileEntry, diff_id_of, tree_entries, write_layer


def _tree(root: Path, mtime: int) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "b.py").write_text("b = 2\n")
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "sub" / ("long-" * 30 + ".txt")).write_text("long name\n")
    tool = root / "pkg" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o700)
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime))
    return root


def _members(store: BlobStore, digest: str) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store.read(digest)))) as tar:
        return tar.getmembers()


def test_the_same_files_give_the_same_digests_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    store = BlobStore(tmp_path / "store")
    one = write_layer(store, tree_entries("opt/x", _tree(tmp_path / "one", 1_000_000_000)))
    two = write_layer(store, tree_entries("opt/x", _tree(tmp_path / "elsewhere" / "two", 1_700_000_000)))
    assert one == two
    assert diff_id_of(store, one.descriptor) == one.diff_id
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    three = write_layer(store, tree_entries("opt/x", tmp_path / "one"))
    assert three.descriptor.digest != one.descriptor.digest


def test_entries_are_sorted_with_parents_fixed_owners_and_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    store = BlobStore(tmp_path / "store")
    layer = write_layer(store, tree_entries("opt/x", _tree(tmp_path / "t", 1_234_567_890)))
    members = _members(store, layer.descriptor.digest)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:3] == ["opt", "opt/x", "opt/x/pkg"]
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.mtime == 0 for m in members)
    modes = {m.name.rsplit("/", 1)[-1]: m.mode for m in members}
    assert modes["tool"] == 0o755 and modes["a.py"] == 0o644 and modes["pkg"] == 0o755
    # a long name needs a PAX header: it says the path and nothing else (no times)
    long = next(m for m in members if "long-" in m.name)
    assert set(long.pax_headers) <= {"path"}


def test_gzip_has_no_name_and_no_time(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    layer = write_layer(store, [FileEntry("a", b"x")])
    head = store.read(layer.descriptor.digest)[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] == 0  # no FNAME, no FCOMMENT, no FEXTRA
    assert head[4:8] == b"\0\0\0\0"  # MTIME 0


def test_a_damaged_blob_is_refused_on_the_way_in(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    with pytest.raises(ValueError, match="damaged"):
        store.put_stream(io.BytesIO(b"other bytes"), "x", expect="sha256:" + "0" * 64)
    assert not list((tmp_path / "store" / "sha256").iterdir())
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store.path("sha256:../../etc/passwd")
