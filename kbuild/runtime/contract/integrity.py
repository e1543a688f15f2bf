"""Whether an artifact root holds the files its build wrote.

The compiler lists every file of the root, the wheels' installed files
included, in FILES_LIST (app/files.json: path -> [size, sha256]). Unpacking a
zipapp records each file's modification time in STAMPS; a start compares
sizes and times (a stat per file), `check` every sha256. Standard library
and the layout only: the zipapp's bootstrap imports this module from the
archive before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from kbuild.runtime.contract.layout import FILES_LIST, STAMPS

Files = dict[str, tuple[int, str]]


def read_files(root: Path) -> Files | None:
    """FILES_LIST of an artifact root; None where it has none (an older artifact)."""
    try:
        raw = json.loads((root / FILES_LIST).read_text())
        return {str(k): (int(v[0]), str(v[1])) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return None


def damage(root: Path, *, full: bool = False) -> str | None:
    """What is wrong with an artifact root, or None. Sizes are compared, and
    the times recorded when it was unpacked (cheap); with `full`, every
    file's sha256 too."""
    files = read_files(root)
    if files is None:
        return f"its list of files {FILES_LIST} is missing or unreadable"
    try:
        stamps = json.loads((root / STAMPS).read_text())
    except (OSError, ValueError):
        stamps = {}
    for rel, (size, digest) in files.items():
        path = root / rel
        try:
            st = os.stat(path)
        except OSError:
            return f"{rel} is missing"
        if st.st_size != size:
            return f"{rel} has {st.st_size} bytes, the build wrote {size}"
        if rel in stamps and st.st_mtime_ns != stamps[rel]:
            return f"{rel} was modified after it was unpacked"
        if full and _sha256(path) != digest:
            return f"{rel} does not have the content the build wrote"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def move_aside(target: Path, problem: str) -> None:
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
