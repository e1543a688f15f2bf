"""Reading the files a pipeline names, whatever is at the path: only regular
files are read, and never more than a cap that the message names.

A path can name a device (/dev/zero never ends), a FIFO (blocks until someone
writes), a symlink to either, or a name longer than the file system allows;
each is one clear problem here, never a hang or a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

# A pipeline or spin file is text a person writes; far below this.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20


class FileProblem(Exception):
    """What is wrong with a path, worded for the person who wrote it."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "something else"


def _oserror(error: OSError) -> FileProblem:
    if error.errno == errno.ENAMETOOLONG:
        return FileProblem("has a name longer than the file system allows")
    if error.errno == errno.ENOENT:
        return FileProblem("no such file")
    if error.errno == errno.ELOOP:
        return FileProblem("is a loop of symbolic links")
    return FileProblem(f"cannot be read: {error.strerror or error}")


def status(path: Path) -> os.stat_result:
    """stat() after symbolic links; FileProblem for a path that cannot be one."""
    try:
        return os.stat(path)
    except OSError as error:
        raise _oserror(error) from None
    except ValueError:  # a NUL byte: no file system holds such a name
        raise FileProblem("holds a NUL byte, which no file name can") from None


def require_regular(path: Path, *, folder_ok: bool = False) -> os.stat_result:
    """The path's stat, if it is a regular file (or, with folder_ok, a folder)."""
    st = status(path)
    if stat.S_ISREG(st.st_mode) or (folder_ok and stat.S_ISDIR(st.st_mode)):
        return st
    return _refuse(st)


def _refuse(st: os.stat_result) -> os.stat_result:
    raise FileProblem(f"is {_kind(st.st_mode)}, not a regular file")


def read_capped(path: Path, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """A regular file's bytes; FileProblem past `limit`."""
    st = require_regular(path)
    if st.st_size > limit:
        raise FileProblem(f"is {st.st_size} bytes, more than the {limit} a document may have")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as error:
        raise _oserror(error) from None
    if len(data) > limit:  # it grew while being read
        raise FileProblem(f"grew past the {limit} bytes a document may have")
    return data


def sha256_regular(path: Path) -> str:
    """sha256 of a regular file (never a device or FIFO)."""
    require_regular(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise _oserror(error) from None
    return digest.hexdigest()


def irregular_in(folder: Path) -> Path | None:
    """The first entry under a folder that is neither a regular file nor a
    folder (a device, FIFO, socket or dangling link), or None."""
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            entry = Path(root) / name
            try:
                st = os.stat(entry)
            except OSError:
                return entry
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                return entry
    return None
