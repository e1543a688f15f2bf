"""What a loaded document is: data, where each node was, and the wording of
values and paths in messages."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kbuild.errors import Problem, SpecError

Parts = tuple[str | int, ...]
Position = tuple[int, int]  # (line, column), both 1-based

# Aliases may be used (anchors are handy for shared config), but the values they
# expand to are capped: a "billion laughs" file must not eat the machine.
MAX_ALIAS_EXPANSION = 100_000
# ... and the text they repeat, in characters: a 1 MB anchor used 20,000 times
# is a small file that would become 20 GB of data.
MAX_ALIAS_EXPANSION_CHARS = 4 * 1024 * 1024
# Lists and mappings nested deeper than this are refused, at the line where the
# nesting passes it (no pipeline needs more than a handful of levels).
MAX_DEPTH = 64


# --------------------------------------------------------------------------- paths

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def json_path(parts: Iterable[str | int]) -> str:
    """`("steps", 0, "type")` -> `$.steps[0].type`."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _SIMPLE_KEY.match(part):
            out.append(f".{part}")
        else:
            out.append("[" + json.dumps(part) + "]")
    return "".join(out)


def did_you_mean(word: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The choice the user most likely meant by `word`, or None."""
    choices = [c for c in choices if isinstance(c, str)]
    if aliases:
        for alias, target in aliases.items():
            if alias.lower() == word.lower():
                return target
    lowered: dict[str, str] = {}
    for c in choices:
        lowered.setdefault(c.lower(), c)
    if word.lower() in lowered and lowered[word.lower()] != word:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    if match and lowered[match[0]] != word:
        return lowered[match[0]]
    return None


def dedupe_sorted(problems: Iterable[Problem]) -> list[Problem]:
    """Problems without repeats, in file order."""
    unique = {(p.file, p.line, p.column, p.path, p.message): p for p in problems}
    return sorted(
        unique.values(),
        key=lambda p: (p.file, p.line or 0, p.column or 0, p.path, p.message),
    )


# ------------------------------------------------------------------------ document


@dataclass
class Document:
    """A loaded YAML or JSON document: plain data plus where each node was."""

    data: dict[str, Any]
    file: str  # as the user named it
    positions: dict[Parts, Position] = field(default_factory=dict, repr=False)
    key_positions: dict[Parts, Position] = field(default_factory=dict, repr=False)
    # Problems found while loading that did not stop it (duplicate keys, odd
    # tags); only filled when load_document(..., strict=False).
    problems: list[Problem] = field(default_factory=list)

    def position(self, parts: Sequence[str | int]) -> Position:
        """Where the node at `parts` is; else where its nearest ancestor is.

        For a mapping entry whose value starts on a later line (a block mapping
        or list), this is the position of its key, which is where a reader looks.
        """
        parts = tuple(parts)
        while parts:
            if parts in self.positions:
                return self.positions[parts]
            parts = parts[:-1]
        return self.positions.get((), (1, 1))

    def key_position(self, parts: Sequence[str | int]) -> Position:
        """Where the key of the mapping entry at `parts` is (else as position())."""
        parts = tuple(parts)
        if parts in self.key_positions:
            return self.key_positions[parts]
        return self.position(parts)

    def problem(self, parts: Sequence[str | int], message: str, *, at_key: bool = False) -> Problem:
        """A Problem located at the node `parts` (or its key)."""
        line, column = self.key_position(parts) if at_key else self.position(parts)
        return Problem(self.file, line, column, json_path(parts), message)


def fatal(file: str, line: int | None, column: int | None, message: str, summary: str | None = None) -> SpecError:
    """A problem that stops loading: SpecError with one Problem."""
    problem = Problem(file, line, column, "$", message)
    return SpecError(f"{file}: {summary or message}", [problem])


def summary(file: str, problems: Sequence[Problem]) -> str:
    n = len({(p.line, p.column, p.path, p.message) for p in problems})
    return f"{file}: {n} problem{'s' if n != 1 else ''}"


def not_a_mapping(doc: Document) -> SpecError:
    return fatal(
        doc.file,
        *doc.position(()),
        f"the top level must be a mapping (key: value pairs), got {describe(doc.data)}",
        "not a mapping",
    )


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing (null)",
}


def describe(value: Any) -> str:
    """What a value is, for 'got …' in messages."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover


def show(value: Any, limit: int = 60) -> str:
    """A short rendering of a value for messages."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
