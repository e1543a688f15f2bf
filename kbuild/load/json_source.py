"""JSON with the position of every value (the standard parser keeps none)."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable

from kbuild.errors import Problem
from kbuild.load.positions import (
    MAX_DEPTH,
    Document,
    Parts,
    Position,
    fatal,
    json_path,
    not_a_mapping,
)


def _too_deep(text: str, file: str) -> None:
    """Refuse nesting past MAX_DEPTH before parsing (which recurses), at the
    line where it passes."""
    depth = 0
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, index) + 1
                column = index - (text.rfind("\n", 0, index) + 1) + 1
                raise fatal(file, line, column, f"nested deeper than {MAX_DEPTH} levels here", "nested too deeply")
        elif char in "]}":
            depth -= 1


def load_json(text: str, file: str) -> Document:
    _too_deep(text, file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fatal(file, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", "invalid JSON") from None
    doc = Document(data, file)
    _JsonLocator(text, doc).run()
    if not isinstance(data, dict):
        raise not_a_mapping(doc)
    return doc


_scanstring: Callable[[str, int], tuple[str, int]] = getattr(json.decoder, "scanstring")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_ATOM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity")


class _JsonLocator:
    """Walks JSON text that json.loads accepted, recording each node's position
    and reporting duplicate keys."""

    def __init__(self, text: str, doc: Document) -> None:
        self.text = text
        self.doc = doc
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(self, index: int) -> Position:
        line = bisect.bisect_right(self.line_starts, index)
        return (line, index - self.line_starts[line - 1] + 1)

    def skip(self, index: int) -> int:
        match = _JSON_WS.match(self.text, index)
        assert match is not None
        return match.end()

    def run(self) -> None:
        start = self.skip(0)
        self.doc.positions[()] = self.pos(start)
        self.value(start, ())

    def value(self, index: int, parts: Parts) -> int:
        text = self.text
        char = text[index]
        if char == "{":
            index = self.skip(index + 1)
            seen: dict[str, Position] = {}
            if text[index] == "}":
                return index + 1
            while True:
                key_pos = self.pos(index)
                key, index = _scanstring(text, index + 1)
                index = self.skip(index)
                assert text[index] == ":"
                index = self.skip(index + 1)
                value_pos = self.pos(index)
                child = parts + (key,)
                if key in seen:
                    self.doc.problems.append(
                        Problem(
                            self.doc.file,
                            *key_pos,
                            json_path(child),
                            f"duplicate key {key!r} (first at line {seen[key][0]}); "
                            "a key may appear only once in an object",
                        )
                    )
                seen[key] = key_pos
                self.doc.key_positions[child] = key_pos
                self.doc.positions[child] = value_pos if value_pos[0] == key_pos[0] else key_pos
                index = self.skip(self.value(index, child))
                if text[index] == "}":
                    return index + 1
                assert text[index] == ","
                index = self.skip(index + 1)
        if char == "[":
            index = self.skip(index + 1)
            if text[index] == "]":
                return index + 1
            item = 0
            while True:
                child = parts + (item,)
                self.doc.positions[child] = self.pos(index)
                index = self.skip(self.value(index, child))
                if text[index] == "]":
                    return index + 1
                assert text[index] == ","
                index = self.skip(index + 1)
                item += 1
        if char == '"':
            return _scanstring(text, index + 1)[1]
        match = _JSON_ATOM.match(text, index)
        assert match is not None, f"unexpected JSON at {index}"
        return match.end()
