"""Start a kbuild zipapp: unpack it once into a cache, then run the runtime CLI.

This file becomes the zipapp's __main__.py, so it uses the standard library only.
The compiler imports it too, for `install_wheel`, so that a build verifies the
same tree that a deployed artifact runs.

The unpacked tree lives at $KBUILD_APP_CACHE/<name>-<payload hash>/ (default
~/.cache/kbuild/apps). Unpacking holds an exclusive file lock, checks again
whether another process finished first, writes into a temporary folder and
renames it into place: concurrent first starts are safe and later starts are
instant.

Unpacking checks every member against the archive's CRC and records a
manifest of what it wrote (MANIFEST: path -> size, mtime, sha256). Every later
start compares sizes and modification times with it (a stat per file, no
reading), so a truncated or rewritten file is found before it is imported;
`check` compares the sha256 of every file too. A damaged tree is moved aside
and unpacked again, with a line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

META = "kbuild-app.json"
COMPLETE = ".complete"
MANIFEST = ".manifest.json"

# path relative to the root -> (size, mtime_ns, sha256)
Manifest = dict[str, tuple[int, int, str]]


class BootstrapError(Exception):
    pass


def user_cache() -> Path:
    """The user's cache folder: $XDG_CACHE_HOME, else ~/.cache."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def cache_root() -> Path:
    configured = os.environ.get("KBUILD_APP_CACHE")
    return Path(configured).expanduser() if configured else user_cache() / "kbuild" / "apps"


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BootstrapError(f"refusing archive entry outside its folder: {name}")
    return path


def _members(zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every file entry of an archive with its checked relative path."""
    for info in zf.infolist():
        if not info.is_dir():
            yield info, _safe_relative(info.filename)


def _write_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> str:
    """Write one member (zipfile checks its CRC as it reads); its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with zf.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    mode = (info.external_attr >> 16) & 0o777
    if mode & stat.S_IXUSR:
        os.chmod(dest, 0o755)
    return digest.hexdigest()


def install_wheel(wheel: str | os.PathLike[str] | IO[bytes], site: Path) -> dict[Path, str]:
    """Unpack a wheel into `site` the way an installer lays out purelib/platlib.

    Files under <dist>.data/purelib and <dist>.data/platlib go to the top; the
    other .data schemes (scripts, headers, data) are not needed to import the
    package and are left out. Returns the sha256 of each file written.
    """
    written: dict[Path, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info, rel in _members(zf):
            if rel.parts[0].endswith(".data"):
                if len(rel.parts) < 3 or rel.parts[1] not in ("purelib", "platlib"):
                    continue
                rel = PurePosixPath(*rel.parts[2:])
            dest = site.joinpath(*rel.parts)
            written[dest] = _write_member(zf, info, dest)
    return written


def unpack(archive: Path, target: Path) -> None:
    """Lay out an artifact's site/ and app/ from `archive` into `target`, with
    the manifest of what was written."""
    site = target / "site"
    written: dict[Path, str] = {}
    with zipfile.ZipFile(archive) as zf:
        for info, rel in _members(zf):
            top = rel.parts[0]
            if top in ("site", "app"):
                dest = target.joinpath(*rel.parts)
                written[dest] = _write_member(zf, info, dest)
            elif top == "wheels" and rel.suffix == ".whl":
                # wheels are stored uncompressed, so the nested archive seeks cheaply
                with zf.open(info) as nested:
                    written.update(install_wheel(nested, site))
    manifest: Manifest = {}
    for path, digest in written.items():
        st = os.stat(path)
        manifest[path.relative_to(target).as_posix()] = (st.st_size, st.st_mtime_ns, digest)
    (target / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))


def read_manifest(root: Path) -> Manifest | None:
    try:
        raw = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    return {str(k): (int(v[0]), int(v[1]), str(v[2])) for k, v in raw.items()}


def damage(root: Path, *, full: bool = False) -> str | None:
    """What is wrong with an unpacked tree, or None. Sizes and modification
    times are compared (cheap); with `full`, every file's sha256 too."""
    manifest = read_manifest(root)
    if manifest is None:
        return f"its manifest {MANIFEST} is missing or unreadable"
    for rel, (size, mtime_ns, digest) in manifest.items():
        path = root / rel
        try:
            st = os.stat(path)
        except OSError:
            return f"{rel} is missing"
        if st.st_size != size:
            return f"{rel} has {st.st_size} bytes, {size} were unpacked"
        if st.st_mtime_ns != mtime_ns:
            return f"{rel} was modified after it was unpacked"
        if full:
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    sha.update(chunk)
            if sha.hexdigest() != digest:
                return f"{rel} does not have the content that was unpacked"
    return None


def ensure_unpacked(archive: Path, meta: dict[str, str]) -> Path:
    root = cache_root()
    key = f"{meta['name']}-{meta['payload'][:20]}"
    target = root / key
    if (target / COMPLETE).is_file() and damage(target) is None:
        return target
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).is_file():  # another process finished while we waited
            problem = damage(target)
            if problem is None:
                return target
            _move_aside(target, problem)
        elif target.exists():  # left half-done by a process that died
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            unpack(archive, tmp)
            (tmp / COMPLETE).write_text(meta["payload"])
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _move_aside(target: Path, problem: str) -> None:
    """Rename a damaged tree out of the way (processes still running from it
    keep their open files), then remove it."""
    aside = target.with_name(f".damaged-{target.name}-{time.time_ns()}")
    os.rename(target, aside)
    print(
        f"kbuild: the unpacked copy at {target} was damaged ({problem}); unpacking it again",
        file=sys.stderr,
        flush=True,
    )
    shutil.rmtree(aside, ignore_errors=True)


def _check_interpreter(meta: dict[str, str]) -> None:
    want = meta.get("python")
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want and want != have:
        raise BootstrapError(
            f"{meta['name']} was built for Python {want} (spin {meta.get('spin')}); "
            f"this is Python {have}: run it with python{want}"
        )
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    if meta.get("arch") and meta["arch"] != arch:
        raise BootstrapError(f"{meta['name']} was built for {meta['arch']} (spin {meta.get('spin')}); this machine is {arch}")


def main() -> int:
    archive = Path(os.path.dirname(os.path.abspath(__file__)))
    try:
        with zipfile.ZipFile(archive) as zf:
            meta = json.loads(zf.read(META))
        _check_interpreter(meta)
        root = ensure_unpacked(archive, meta)
    except (BootstrapError, OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
        print(f"error: cannot start {archive.name}: {error}", file=sys.stderr)
        return 3
    if "check" in sys.argv[1:2]:
        problem = damage(root, full=True)
        if problem is not None:  # found only by reading: a later start unpacks again
            _move_aside(root, problem)
            print(f"error: the unpacked artifact was damaged: {problem}; start it again", file=sys.stderr)
            return 1
        print("artifact files: ok (every unpacked file has the content it was unpacked with)")
    sys.path.insert(0, str(root / "site"))
    from kbuild.runtime.cli import main as run

    return run(sys.argv[1:], root)


if __name__ == "__main__":
    sys.exit(main())
