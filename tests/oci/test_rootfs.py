"""An image's root from its layers: whiteouts, opaque folders, and paths
resolved inside the root, never outside it."""

from __future__ import annotations

import os
from pathlib import Path

from kbuild.oci.blobs import BlobStore
from kbuild.oci.layers import FileEntry, write_layer
from kbuild.oci.rootfs import extract, find_in_root


def test_whiteouts_and_opaque_folders(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    lower = write_layer(
        store,
        [FileEntry("etc/a", b"a"), FileEntry("etc/b", b"b"), FileEntry("var/x/1", b"1"), FileEntry("var/x/2", b"2")],
    )
    upper = write_layer(
        store, [FileEntry("etc/.wh.a", b""), FileEntry("var/x/.wh..wh..opq", b""), FileEntry("var/x/3", b"3")]
    )
    root = tmp_path / "root"
    extract(store, [lower.descriptor, upper.descriptor], root)
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["b"]
    assert sorted(p.name for p in (root / "var" / "x").iterdir()) == ["3"]


def test_programs_are_found_through_links_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    real = root / "usr" / "bin" / "python3.11"
    real.write_text("")
    real.chmod(0o755)
    os.symlink("python3.11", root / "usr" / "bin" / "python3")
    os.symlink("usr/bin", root / "bin")
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", root / "usr" / "local" / "bin" / "python")  # absolute: inside the root
    assert find_in_root(root, "python3", "/usr/local/bin:/usr/bin") == real
    assert find_in_root(root, "python", "/usr/local/bin") == real
    assert find_in_root(root, "/bin/python3", "") == real
    assert find_in_root(root, "perl", "/usr/bin") is None
