"""Loading YAML/JSON documents with source positions, and validating them
against JSON Schemas with messages a user can act on.

Generic: used for pipeline files (kbuild.load.pipeline) and spin files alike.

    doc = load_document(Path("pipeline.yaml"))      # SpecError on unreadable input
    problems = schema_problems(doc, load_schema("pipeline"))

Every value of the document has a known position; `Document.position(parts)`
answers for any JSON path (as a tuple of keys and indexes) with the position of
the node itself or, failing that, of its nearest ancestor.
"""

from __future__ import annotations

from pathlib import Path

from kbuild.errors import SpecError
from kbuild.load.files import FileProblem, read_capped
from kbuild.load.json_source import load_json
from kbuild.load.positions import (
    Document,
    Parts,
    Position,
    dedupe_sorted,
    did_you_mean,
    fatal,
    json_path,
    summary,
)
from kbuild.load.schema_errors import load_schema, schema_problems
from kbuild.load.yaml_source import load_yaml

__all__ = [
    "Document",
    "Parts",
    "Position",
    "dedupe_sorted",
    "did_you_mean",
    "json_path",
    "load_document",
    "load_schema",
    "schema_problems",
]


def load_document(path: Path, *, strict: bool = True) -> Document:
    """Load a YAML file (or JSON, for a `.json` suffix) whose top level is a mapping.

    Raises SpecError for an unreadable file, a syntax error, an empty file or a
    top level that is not a mapping. Problems that still leave usable data
    (duplicate keys, unsupported tags) are raised too when `strict`; otherwise
    they are kept in `Document.problems` for the caller to report together with
    its own (schema_problems() includes them).
    """
    file = str(path)
    try:
        raw = read_capped(Path(path))
    except FileProblem as problem:
        raise SpecError(f"{file}: {problem}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fatal(
            file, line, column, f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})", "not UTF-8 text"
        ) from None

    if not text.strip() or (not _is_json(path) and _only_comments(text)):
        raise fatal(
            file, 1, 1, "the file is empty: expected a mapping (key: value pairs) at the top level", "empty file"
        )

    try:
        if _is_json(path):
            doc = load_json(text, file)
        else:
            doc = load_yaml(text, file)
    except RecursionError:
        raise fatal(file, None, None, "the document is nested too deeply", "nested too deeply") from None

    if strict and doc.problems:
        raise SpecError(summary(file, doc.problems), dedupe_sorted(doc.problems))
    return doc


def _is_json(path: Path) -> bool:
    return Path(path).suffix.lower() == ".json"


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())
