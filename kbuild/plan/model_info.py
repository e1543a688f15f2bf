"""Facts read from model files at build time without loading them.

A scikit-learn estimator pickle loads reliably only with the version that wrote
it, which pickles record as `_sklearn_version`. Reading that string from the
bytes (never unpickling: that would run the file's code on the build machine)
lets the plan pin the same version.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

# the key, an optional memo opcode (MEMOIZE, BINPUT or LONG_BINPUT), then the
# value as SHORT_BINUNICODE or BINUNICODE
_VERSION_RE = re.compile(
    rb"_sklearn_version(?:\x94|q.|r.{4})?(?:\x8c(?P<short>[\x01-\x40])|X(?P<long>[\x01-\x40]\x00\x00\x00))",
    re.S,
)
_MAX_BYTES = 256 << 20


def _decompressed(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:1] == b"x" and data[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):  # zlib (joblib compress=N)
        return zlib.decompress(data)
    return data


def sklearn_version(model: Path) -> str | None:
    """The scikit-learn version a pickled or joblib-dumped estimator was saved with, if recorded."""
    if not model.is_file() or model.stat().st_size > _MAX_BYTES:
        return None
    try:
        data = _decompressed(model.read_bytes())
    except (OSError, zlib.error, EOFError):
        return None
    found = _VERSION_RE.search(data)
    if not found:
        return None
    length = found.group("short")[0] if found.group("short") else int.from_bytes(found.group("long"), "little")
    raw = data[found.end() : found.end() + length]
    version = raw.decode("ascii", "replace")
    return version if re.fullmatch(r"[0-9]+(\.[0-9]+)*([a-z]+[0-9]*)?(\.post[0-9]+)?", version) else None


def _mlflow_requirements_text(model: Path) -> str | None:
    """requirements.txt beside the MLmodel file, in a model folder or zip."""
    if model.is_dir():
        found = sorted(model.rglob("MLmodel"), key=lambda p: len(p.parts))
        if not found:
            return None
        path = found[0].parent / "requirements.txt"
        return path.read_text(encoding="utf-8") if path.is_file() else None
    import zipfile

    try:
        with zipfile.ZipFile(model) as zf:
            names = zf.namelist()
            roots = sorted((n for n in names if n.rsplit("/", 1)[-1] == "MLmodel"), key=lambda n: n.count("/"))
            if not roots:
                return None
            wanted = roots[0][: -len("MLmodel")] + "requirements.txt"
            return zf.read(wanted).decode("utf-8") if wanted in names else None
    except (OSError, zipfile.BadZipFile):
        return None


def mlflow_requirements(model: Path) -> list[str]:
    """The pip requirements an MLflow model was saved with (its requirements.txt).

    Options such as `-r` or `-c` lines are left out: they name files of the
    machine that saved the model.
    """
    text = _mlflow_requirements_text(model)
    if text is None:
        return []
    requirements = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            requirements.append(line)
    return requirements
