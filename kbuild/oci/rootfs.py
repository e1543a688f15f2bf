"""An image's root file system on disk, from its layers, for running `check`
under user-mode emulation where no engine runs the image.

Layers are applied in order with their whiteouts (.wh.NAME deletes NAME,
.wh..wh..opq empties the folder). Device nodes are skipped and owners are not
kept: the root is only read by an unprivileged emulated Python.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from kbuild.oci.blobs import BlobStore, Descriptor
from kbuild.oci.layers import open_layer

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _inside(root: Path, name: str) -> Path | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".", "")]
    if any(p == ".." for p in parts) or not parts:
        return None
    return root.joinpath(*parts)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def apply_layer(store: BlobStore, layer: Descriptor, root: Path) -> None:
    with open_layer(store, layer) as data, tarfile.open(fileobj=data, mode="r|") as tar:
        for member in tar:
            dest = _inside(root, member.name)
            if dest is None:
                continue
            base = dest.name
            if base == _OPAQUE:
                if dest.parent.is_dir():
                    for child in dest.parent.iterdir():
                        _remove(child)
                continue
            if base.startswith(_WHITEOUT):
                _remove(dest.with_name(base[len(_WHITEOUT) :]))
                continue
            if dest.is_symlink() or (dest.exists() and not (member.isdir() and dest.is_dir())):
                _remove(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if member.isdir():
                dest.mkdir(exist_ok=True)
                os.chmod(dest, 0o755)
            elif member.issym():
                os.symlink(member.linkname, dest)
            elif member.islnk():
                target = _inside(root, member.linkname)
                if target is not None and target.exists():
                    os.link(target, dest)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                with dest.open("wb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(dest, (member.mode & 0o755) | 0o644)


def extract(store: BlobStore, layers: Sequence[Descriptor], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        apply_layer(store, layer, root)


def cached_root(store: BlobStore, layers: Sequence[Descriptor], cache: Path, key: str) -> Path:
    """The root of `layers`, extracted once per key (e.g. a base's digest)."""
    root = cache / key.replace(":", "-")
    if (root / ".complete").is_file():
        return root / "root"
    if root.exists():
        shutil.rmtree(root)
    tmp = cache / f".{key.replace(':', '-')}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    extract(store, layers, tmp / "root")
    (tmp / ".complete").write_text(key)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:  # another build finished it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "root"


def find_in_root(root: Path, program: str, path_env: str) -> Path | None:
    """`program` as the image's PATH finds it, symlinks followed inside `root`."""
    candidates = [program] if "/" in program else [f"{d}/{program}" for d in path_env.split(":") if d]
    for candidate in candidates:
        resolved = resolve_in_root(root, candidate)
        if resolved is not None and resolved.is_file() and os.access(resolved, os.X_OK):
            return resolved
    return None


def resolve_in_root(root: Path, path: str, depth: int = 0) -> Path | None:
    if depth > 40:
        return None
    current = root
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            current = current.parent if current != root else root
            continue
        nxt = current / part
        if nxt.is_symlink():
            link = os.readlink(nxt)
            rest = "/".join(parts[i + 1 :])
            start = (
                link if link.startswith("/") else str(PurePosixPath("/", current.relative_to(root).as_posix(), link))
            )
            return resolve_in_root(root, f"{start}/{rest}" if rest else start, depth + 1)
        current = nxt
    return current if current.exists() else None
