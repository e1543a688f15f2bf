"""Leave packages a pipeline never imports out of pip-compile's output.

Some wheels declare dependencies their runtime use never touches: tokenizers
requires huggingface-hub (and through it an HTTP stack and a storage client)
only for `Tokenizer.from_pretrained`, which downloads from a hub; an artifact
loads its tokenizer.json from its own files. A spin names such packages per
backend (`unused`); they are dropped here with every package that only they
required, read from pip-compile's `# via` annotations. A package that something
kept also requires stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==|@)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class _Entry:
    name: str
    lines: list[str]
    via: set[str] = field(default_factory=set)


def drop_unused(body: str, unused: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """pip-compile's output without the unused packages and what only they
    required, and the names dropped (sorted)."""
    wanted_out = {_normalize(u) for u in unused}
    if not wanted_out:
        return body, ()
    head, entries = _parse(body)
    dropped: set[str] = set()
    for entry in entries:
        if entry.name in wanted_out:
            dropped.add(entry.name)
    changed = bool(dropped)
    while changed:  # a package whose every requirer is dropped goes too
        changed = False
        for entry in entries:
            if entry.name not in dropped and entry.via and entry.via <= dropped:
                dropped.add(entry.name)
                changed = True
    kept = [line for entry in entries if entry.name not in dropped for line in entry.lines]
    return "".join(head + kept), tuple(sorted(dropped))


def _parse(body: str) -> tuple[list[str], list[_Entry]]:
    head: list[str] = []
    entries: list[_Entry] = []
    in_via = False
    for line in body.splitlines(keepends=True):
        match = _NAME.match(line)
        if match:
            entries.append(_Entry(_normalize(match.group(1)), [line]))
            in_via = False
            continue
        if not entries:
            head.append(line)
            continue
        entry = entries[-1]
        entry.lines.append(line)
        text = line.strip()
        if text.startswith("# via"):
            rest = text[len("# via") :].strip()
            in_via = not rest
            if rest:
                entry.via.add(_requirer(rest))
        elif in_via and text.startswith("#   "):
            entry.via.add(_requirer(text[len("#   ") :].strip()))
        elif not text.startswith("--hash") and not text.startswith("#"):
            in_via = False
    return head, entries


def _requirer(text: str) -> str:
    """A `# via` item: a package name, or `-r FILE` / `-c FILE` (the
    requirements themselves, never dropped)."""
    return text if text.startswith("-") else _normalize(text.split()[0])
