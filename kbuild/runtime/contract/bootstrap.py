"""Start a kbuild zipapp: unpack it once into a cache, then run the runtime CLI.

This file becomes the zipapp's __main__.py, so it uses the standard library only.
The compiler imports it too, for `install_wheel`, so that a build verifies the
same tree that a deployed artifact runs.

The unpacked tree lives at $KBUILD_APP_CACHE/<name>-<payload hash>/ (default
~/.cache/kbuild/apps). Unpacking holds an exclusive file lock, checks again
whether another process finished first, writes into a temporary folder and
renames it into place: concurrent first starts are safe and later starts are
instant.

Integrity: the compiler writes FILES (app/files.json: every file of the root,
installed wheels included -> size and sha256) into every artifact. Unpacking
checks what it writes against it, and records each file's modification time;
every later start compares sizes and times (a stat per file, no reading), so
a truncated or rewritten file is found before it is imported. `check` (the
runtime CLI, in any artifact, images too) compares every sha256. A damaged
unpacked tree is moved aside and unpacked again, with a line on stderr. The
checks (integrity) and the file names (layout) are the contract's: the
bootstrap imports them from the archive in place (zipimport), before the
unpacked site/ takes their place on sys.path; the compiler imports this
module too, with its own copies.
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
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

COMPLETE = ".complete"
# the archive's runtime, importable in place: the one path the bootstrap
# knows before it can import the layout
_ARCHIVE_SITE = "site"


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


def wheel_members(zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """A wheel's installed files, each with its path under site/: files under
    <dist>.data/purelib and <dist>.data/platlib go to the top; the other .data
    schemes (scripts, headers, data) are not needed to import the package."""
    for info, rel in _members(zf):
        if rel.parts[0].endswith(".data"):
            if len(rel.parts) < 3 or rel.parts[1] not in ("purelib", "platlib"):
                continue
            rel = PurePosixPath(*rel.parts[2:])
        yield info, rel


def install_wheel(wheel: str | os.PathLike[str] | IO[bytes], site: Path) -> dict[Path, str]:
    """Unpack a wheel into `site` the way an installer lays out purelib/platlib;
    the sha256 of each file written."""
    written: dict[Path, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info, rel in wheel_members(zf):
            dest = site.joinpath(*rel.parts)
            written[dest] = _write_member(zf, info, dest)
    return written


def unpack(archive: Path, target: Path) -> None:
    """Lay out an artifact's site/ and app/ from `archive` into `target`,
    checking each file against the file list and recording its time in STAMPS."""
    from kbuild.runtime.contract import integrity, layout

    site = target / layout.SITE_DIR
    written: dict[Path, str] = {}
    with zipfile.ZipFile(archive) as zf:
        for info, rel in _members(zf):
            top = rel.parts[0]
            if top in (layout.SITE_DIR, layout.APP_DIR) or rel.as_posix() == layout.SBOM_FILE:
                dest = target.joinpath(*rel.parts)
                written[dest] = _write_member(zf, info, dest)
            elif top == "wheels" and rel.suffix == ".whl":
                # wheels are stored uncompressed, so the nested archive seeks cheaply
                with zf.open(info) as nested:
                    written.update(install_wheel(nested, site))
    files = integrity.read_files(target)
    stamps: dict[str, int] = {}
    for path, digest in written.items():
        name = path.relative_to(target).as_posix()
        if files is not None and name != layout.FILES_LIST:
            if name not in files or files[name][1] != digest:
                raise BootstrapError(f"the archive is damaged: {name} is not what the build wrote")
        stamps[name] = os.stat(path).st_mtime_ns
    (target / layout.STAMPS).write_text(json.dumps(stamps, sort_keys=True))


def ensure_unpacked(archive: Path, meta: dict[str, str]) -> Path:
    root = cache_root()
    key = f"{meta['name']}-{meta['payload'][:20]}"
    target = root / key
    from kbuild.runtime.contract import integrity

    if (target / COMPLETE).is_file() and integrity.damage(target) is None:
        return target
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).is_file():  # another process finished while we waited
            problem = integrity.damage(target)
            if problem is None:
                return target
            integrity.move_aside(target, problem)
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
        raise BootstrapError(
            f"{meta['name']} was built for {meta['arch']} (spin {meta.get('spin')}); this machine is {arch}"
        )


def _forget_kbuild() -> None:
    """Drop every kbuild module imported so far (one this Python has installed,
    or the archive's), so that the next import finds the one sys.path puts first."""
    for name in [m for m in sys.modules if m == "kbuild" or m.startswith("kbuild.")]:
        del sys.modules[name]


def main() -> int:
    archive = Path(os.path.dirname(os.path.abspath(__file__)))
    # the archive's own contract first: a kbuild this Python has installed
    # must not stand in for it
    in_archive = str(archive / _ARCHIVE_SITE)
    _forget_kbuild()
    sys.path.insert(0, in_archive)
    try:
        from kbuild.runtime.contract import layout

        with zipfile.ZipFile(archive) as zf:
            meta = json.loads(zf.read(layout.ZIPAPP_META))
        _check_interpreter(meta)
        root = ensure_unpacked(archive, meta)
    except (BootstrapError, OSError, zipfile.BadZipFile, KeyError, ValueError, ImportError) as error:
        print(f"error: cannot start {archive.name}: {error}", file=sys.stderr)
        return 3
    # from here on everything comes from the unpacked, checked tree
    sys.path.remove(in_archive)
    _forget_kbuild()
    sys.path.insert(0, str(root / layout.SITE_DIR))
    from kbuild.runtime.cli import exit_process
    from kbuild.runtime.cli import main as run

    exit_process(run(sys.argv[1:], root))


if __name__ == "__main__":
    sys.exit(main())
