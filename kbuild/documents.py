"""Loading YAML/JSON documents with source positions, and validating them
against JSON Schemas with messages a user can act on.

Generic: used for pipeline files (kbuild.spec) and spin files alike.

    doc = load_document(Path("pipeline.yaml"))      # SpecError on unreadable input
    problems = schema_problems(doc, load_schema("pipeline"))

Every value of the document has a known position; `Document.position(parts)`
answers for any JSON path (as a tuple of keys and indexes) with the position of
the node itself or, failing that, of its nearest ancestor.
"""

from __future__ import annotations

import bisect
import copy
import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kbuild.errors import Problem, SpecError
from kbuild.resources import data_dir

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

Parts = tuple[str | int, ...]
Position = tuple[int, int]  # (line, column), both 1-based

# Aliases may be used (anchors are handy for shared config), but the values they
# expand to are capped: a "billion laughs" file must not eat the machine.
MAX_ALIAS_EXPANSION = 100_000


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


def did_you_mean(
    word: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None
) -> str | None:
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

    def problem(
        self, parts: Sequence[str | int], message: str, *, at_key: bool = False
    ) -> Problem:
        """A Problem located at the node `parts` (or its key)."""
        line, column = self.key_position(parts) if at_key else self.position(parts)
        return Problem(self.file, line, column, json_path(parts), message)


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
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{file}: is a folder, not a file") from None
    except OSError as exc:
        raise SpecError(f"{file}: cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fatal(
            file, line, column, f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})", "not UTF-8 text"
        ) from None

    if not text.strip() or (not _is_json(path) and _only_comments(text)):
        raise _fatal(file, 1, 1, "the file is empty: expected a mapping (key: value pairs) at the top level", "empty file")

    try:
        if _is_json(path):
            doc = _load_json(text, file)
        else:
            doc = _load_yaml(text, file)
    except RecursionError:
        raise _fatal(file, None, None, "the document is nested too deeply", "nested too deeply") from None

    if strict and doc.problems:
        raise SpecError(_summary(file, doc.problems), dedupe_sorted(doc.problems))
    return doc


def _is_json(path: Path) -> bool:
    return Path(path).suffix.lower() == ".json"


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _fatal(
    file: str, line: int | None, column: int | None, message: str, summary: str | None = None
) -> SpecError:
    """A problem that stops loading: SpecError with one Problem."""
    problem = Problem(file, line, column, "$", message)
    return SpecError(f"{file}: {summary or message}", [problem])


def _summary(file: str, problems: Sequence[Problem]) -> str:
    n = len({(p.line, p.column, p.path, p.message) for p in problems})
    return f"{file}: {n} problem{'s' if n != 1 else ''}"


def _not_a_mapping(doc: Document) -> SpecError:
    return _fatal(
        doc.file,
        *doc.position(()),
        f"the top level must be a mapping (key: value pairs), got {describe(doc.data)}",
        "not a mapping",
    )


# ----------------------------------------------------------------------------- YAML

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader, used only to compose nodes (never to construct objects)."""


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _mark(mark: Any) -> Position:
    return (mark.line + 1, mark.column + 1)


def _load_yaml(text: str, file: str) -> Document:
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_syntax_error(file, exc) from None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = column = None
        if isinstance(position, int):
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(exc, "reason", None) or str(exc)
        raise _fatal(file, line, column, f"invalid YAML: {reason}", "invalid YAML") from None
    finally:
        if loader is not None:
            loader.dispose()

    if node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
        raise _fatal(file, 1, 1, "the file is empty: expected a mapping (key: value pairs) at the top level", "empty file")

    assert loader is not None
    builder = _YamlBuilder(file, loader)
    data = builder.build(node)
    doc = Document(data, file, builder.positions, builder.key_positions, builder.problems)
    if not isinstance(data, dict):
        raise _not_a_mapping(doc)
    return doc


_YAML_HINTS = [
    ("'\\t'", "YAML does not allow tabs for indentation; indent with spaces"),
    ("mapping values are not allowed here",
     "a value that contains ': ' must be put in quotes; otherwise check the indentation"),
    ("expected <block end>", "check the indentation: this line is not aligned with the lines above it"),
    ("could not find expected ':'", "check the indentation, and that every key is followed by ':'"),
    ("expected a single document",
     "a file holds one document: remove the '---' line and what follows, or merge them"),
    ("found undefined alias", "an alias (*name) must refer to an anchor (&name) defined before it"),
]


def _yaml_syntax_error(file: str, exc: yaml.MarkedYAMLError) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, column = _mark(mark) if mark is not None else (None, None)
    problem = (exc.problem or exc.context or "syntax error").strip()
    message = f"invalid YAML: {problem}"
    if exc.context and exc.problem:
        context = exc.context.strip()
        if exc.context_mark is not None and exc.context_mark is not exc.problem_mark:
            cl, cc = _mark(exc.context_mark)
            if (cl, cc) != (line, column):
                context += f" that starts at line {cl}, column {cc}"
        message += f" ({context})"
    text = f"{exc.problem or ''} {exc.context or ''}"
    for needle, hint in _YAML_HINTS:
        if needle in text:
            message += f"; {hint}"
            break
    return _fatal(file, line, column, message, "invalid YAML")


class _AliasBomb(Exception):
    pass


class _YamlBuilder:
    """Turns composed nodes into plain data, recording positions as it goes."""

    def __init__(self, file: str, loader: _Loader) -> None:
        self.file = file
        self.loader = loader
        self.positions: dict[Parts, Position] = {}
        self.key_positions: dict[Parts, Position] = {}
        self.problems: list[Problem] = []
        self._seen: set[int] = set()
        self._repeats = 0
        self._stack: set[int] = set()

    def build(self, node: Node) -> Any:
        self.positions[()] = _mark(node.start_mark)
        try:
            return self._value(node, ())
        except _AliasBomb as exc:
            raise _fatal(self.file, *_mark(node.start_mark), str(exc), "refused: aliases") from None

    def _add_problem(self, node: Node, parts: Parts, message: str) -> None:
        line, column = _mark(node.start_mark)
        self.problems.append(Problem(self.file, line, column, json_path(parts), message))

    def _value(self, node: Node, parts: Parts) -> Any:
        ident = id(node)
        if ident in self._stack:
            line, column = _mark(node.start_mark)
            raise _AliasBomb(f"an alias refers to the node that contains it (line {line}, column {column})")
        if ident in self._seen:
            self._repeats += 1
            if self._repeats > MAX_ALIAS_EXPANSION:
                raise _AliasBomb(
                    f"aliases expand to more than {MAX_ALIAS_EXPANSION} values; "
                    "refusing the file (this guards against 'billion laughs' files)"
                )
        self._seen.add(ident)
        if isinstance(node, ScalarNode):
            return self._scalar(node, parts)
        self._stack.add(ident)
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    self._add_problem(node, parts, f"unsupported YAML tag {_tag(node.tag)!r}; write a plain list")
                out = []
                for index, item in enumerate(node.value):
                    child = parts + (index,)
                    self.positions[child] = _mark(item.start_mark)
                    out.append(self._value(item, child))
                return out
            if isinstance(node, MappingNode):
                if node.tag != _TAG + "map":
                    self._add_problem(node, parts, f"unsupported YAML tag {_tag(node.tag)!r}; write a plain mapping")
                return self._mapping(node, parts)
        finally:
            self._stack.discard(ident)
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def _scalar(self, node: ScalarNode, parts: Parts) -> Any:
        tag = node.tag
        if tag == _TAG + "str":
            return node.value
        if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
            return self.loader.yaml_constructors[tag](self.loader, node)
        if tag == _TAG + "timestamp":  # a date stays the text the user wrote
            return node.value
        self._add_problem(node, parts, f"unsupported YAML tag {_tag(tag)!r}; write a plain value")
        return node.value

    def _key(self, node: Node, parts: Parts) -> str | None:
        if isinstance(node, ScalarNode):
            return str(node.value)  # the key as written: `on:` stays "on", `1:` is "1"
        self._add_problem(node, parts, "a key must be a plain string, not a list or a mapping")
        return None

    def _pairs(self, node: MappingNode, parts: Parts) -> tuple[list[tuple[Node, Node]], list[tuple[Node, Node]]]:
        """(merged pairs, explicit pairs) of a mapping, resolving `<<` merge keys."""
        merged: list[tuple[Node, Node]] = []
        explicit: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self._add_problem(source, parts, "a merge key (<<) needs a mapping or a list of mappings")
                    continue
                if id(source) in self._stack:
                    raise _AliasBomb("a merge key (<<) refers to the mapping that contains it")
                self._stack.add(id(source))
                try:
                    inner_merged, inner_explicit = self._pairs(source, parts)
                finally:
                    self._stack.discard(id(source))
                merged.extend(inner_merged + inner_explicit)
        return merged, explicit

    def _mapping(self, node: MappingNode, parts: Parts) -> dict[str, Any]:
        merged, explicit = self._pairs(node, parts)
        explicit_keys: dict[str, Node] = {}
        for key_node, _ in explicit:
            key = self._key(key_node, parts)
            if key is None:
                continue
            if key in explicit_keys:
                first = explicit_keys[key].start_mark
                self._add_problem(
                    key_node,
                    parts + (key,),
                    f"duplicate key {key!r} (first at line {first.line + 1}); "
                    "a key may appear only once in a mapping",
                )
            else:
                explicit_keys[key] = key_node
        out: dict[str, Any] = {}
        chosen: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in merged:  # earlier merge sources win
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is not None and key not in explicit_keys and key not in chosen:
                chosen[key] = (key_node, value_node)
        for key_node, value_node in explicit:  # the last duplicate wins, as in PyYAML
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is not None:
                chosen[key] = (key_node, value_node)
        for key, (key_node, value_node) in chosen.items():
            child = parts + (key,)
            key_pos = _mark(key_node.start_mark)
            value_pos = _mark(value_node.start_mark)
            self.key_positions[child] = key_pos
            self.positions[child] = value_pos if value_pos[0] == key_pos[0] else key_pos
            out[key] = self._value(value_node, child)
        return out


# ----------------------------------------------------------------------------- JSON


def _load_json(text: str, file: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fatal(file, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", "invalid JSON") from None
    doc = Document(data, file)
    _JsonLocator(text, doc).run()
    if not isinstance(data, dict):
        raise _not_a_mapping(doc)
    return doc


_scanstring: Callable[[str, int], tuple[str, int]] = getattr(json.decoder, "scanstring")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_ATOM = re.compile(
    r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity"
)


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
                            self.doc.file, *key_pos, json_path(child),
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


# ---------------------------------------------------------------------------- schemas


def load_schema(name: str) -> dict[str, Any]:
    """A schema from kbuild's schemas/ folder.

    `name` is "pipeline", "pipeline.schema.json" or any file name in the folder.
    """
    file = name if name.endswith(".json") else f"{name}.schema.json"
    return copy.deepcopy(_read_schema(file))


@functools.lru_cache(maxsize=None)
def _read_schema(file: str) -> dict[str, Any]:
    path = data_dir("schemas") / file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"kbuild schema {file!r} not found (kbuild is not installed correctly)") from None
    schema: dict[str, Any] = json.loads(text)
    return schema


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


def _types_phrase(types: Any) -> str:
    if isinstance(types, str):
        types = [types]
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types)


def schema_problems(doc: Document, schema: Mapping[str, Any]) -> list[Problem]:
    """Every way `doc` fails `schema` (plus doc.problems), friendly, in file order."""
    validator = Draft202012Validator(schema)
    problems = list(doc.problems)
    try:
        for error in validator.iter_errors(doc.data):
            problems.extend(_problems_for(doc, error))
    except RecursionError:
        problems.append(doc.problem((), "the document is nested too deeply to validate"))
    return dedupe_sorted(problems)


def _label(parts: Parts, schema: Mapping[str, Any]) -> str:
    title = schema.get("title") if isinstance(schema, Mapping) else None
    if isinstance(title, str):
        return title
    if parts and isinstance(parts[-1], str):
        return parts[-1]
    return "value"


def _branch_errors(error: ValidationError) -> dict[int, list[ValidationError]]:
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        index = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(int(index), []).append(sub)
    return branches


def _required_alternatives(subschemas: Any) -> list[str] | None:
    """For oneOf/anyOf: [{required: [a]}, {required: [b]}] -> [a, b]."""
    if not isinstance(subschemas, list):
        return None
    names: list[str] = []
    for sub in subschemas:
        if not isinstance(sub, Mapping) or set(sub) != {"required"}:
            return None
        names.extend(sub["required"])
    return names


def _quoted_alternatives(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _problems_for(doc: Document, error: ValidationError) -> list[Problem]:
    parts: Parts = tuple(error.absolute_path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.instance
    expected = schema.get("x-expected")
    rule: Any = error.validator_value  # the keyword's value in the schema

    if "propertyNames" in error.absolute_schema_path and isinstance(value, str):
        # jsonschema reports a bad key at its mapping; point at the key itself.
        child = parts + (value,)
        what = expected or f"a name matching {schema.get('pattern', 'the allowed names')}"
        return [doc.problem(child, f"invalid name {value!r}: expected {what}", at_key=True)]

    if keyword in ("oneOf", "anyOf"):
        return _alternatives(doc, error, parts)

    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(value, Mapping):
        allowed = list(_property_names(schema))
        patterns = list((schema.get("patternProperties") or {}).keys())
        extras = [
            k for k in value
            if k not in allowed and not any(re.search(p, k) for p in patterns)
        ]
        if keyword == "unevaluatedProperties":
            named = re.findall(r"'([^']*)'", error.message)
            extras = [k for k in extras if k in named] or [k for k in named if k in value]
        where = f" in {schema['title']}" if isinstance(schema.get("title"), str) else ""
        out = []
        for key in extras:
            guess = did_you_mean(key, allowed)
            message = f"unknown field {key!r}{where}"
            if guess:
                message += f"; did you mean {guess!r}?"
            elif allowed:
                message += f"; allowed fields: {', '.join(allowed)}"
            out.append(doc.problem(parts + (key,), message, at_key=True))
        if out:
            return out

    if keyword == "required" and isinstance(value, Mapping):
        out = []
        properties = schema.get("properties") or {}
        where = f" in {schema['title']}" if isinstance(schema.get("title"), str) else ""
        for name in rule:
            if name in value:
                continue
            message = f"missing required field {name!r}{where}"
            hint = (properties.get(name) or {}).get("x-required") if isinstance(properties.get(name), Mapping) else None
            if hint:
                message += f": {hint}"
            out.append(doc.problem(parts, message, at_key=True))
        return out

    if keyword == "type":
        message = f"expected {_types_phrase(rule)}, got {describe(value)}"
        wanted = rule if isinstance(rule, list) else [rule]
        if "string" in wanted and isinstance(value, (int, float, bool)):
            message += "; put the value in quotes if it is meant as text"
        return [doc.problem(parts, message)]

    if keyword == "enum":
        allowed_values = list(rule)
        label = _label(parts, schema)
        listed = ", ".join(str(v) if isinstance(v, str) else show(v) for v in allowed_values)
        if isinstance(value, str):
            message = f"unknown {label} {value!r}"
            guess = did_you_mean(value, allowed_values, schema.get("x-aliases"))
            if guess is not None:
                message += f"; did you mean {guess!r}? Expected one of: {listed}"
            else:
                message += f"; expected one of: {listed}"
        else:
            message = f"expected one of: {listed}; got {describe(value)}"
        return [doc.problem(parts, message)]

    if keyword == "const":
        custom = schema.get("x-message")
        if isinstance(custom, str):
            return [doc.problem(parts, custom.replace("{value}", show(value)))]
        return [doc.problem(parts, f"expected {show(rule)}, got {show(value)}")]

    if expected:
        return [doc.problem(parts, f"expected {expected}, got {show(value)}")]

    if keyword == "pattern":
        return [doc.problem(parts, f"{show(value)} does not match the pattern {rule}")]
    if keyword == "minimum":
        return [doc.problem(parts, f"must be at least {rule}, got {show(value)}")]
    if keyword == "maximum":
        return [doc.problem(parts, f"must be at most {rule}, got {show(value)}")]
    if keyword == "exclusiveMinimum":
        return [doc.problem(parts, f"must be greater than {rule}, got {show(value)}")]
    if keyword == "exclusiveMaximum":
        return [doc.problem(parts, f"must be less than {rule}, got {show(value)}")]
    if keyword in ("minItems", "maxItems") and isinstance(value, list):
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and low == high:
            message = f"expected exactly {low} item{'s' if low != 1 else ''}, got {len(value)}"
        elif keyword == "minItems":
            message = "must not be empty" if rule == 1 else f"needs at least {rule} items, got {len(value)}"
        else:
            message = f"may have at most {rule} items, got {len(value)}"
        return [doc.problem(parts, message)]
    if keyword in ("minProperties", "minLength") and rule == 1:
        return [doc.problem(parts, "must not be empty")]
    if keyword == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        repeated: list[Any] = []
        for item in value:
            if item in seen and item not in repeated:
                repeated.append(item)
            seen.append(item)
        return [doc.problem(parts, "contains duplicates: " + ", ".join(show(r) for r in repeated))]
    message = error.message
    if len(message) > 200:
        message = message[:199] + "…"
    return [doc.problem(parts, message)]


def _property_names(schema: Mapping[str, Any]) -> Iterator[str]:
    yield from (schema.get("properties") or {}).keys()


def _alternatives(doc: Document, error: ValidationError, parts: Parts) -> list[Problem]:
    """Collapse a failed oneOf/anyOf into the problems of its most relevant branch."""
    names = _required_alternatives(error.validator_value)
    if not error.context:  # oneOf: more than one branch matched
        if names:
            extra = "not both" if len(names) == 2 else "not several"
            return [doc.problem(parts, f"give only one of {_quoted_alternatives(names)}, {extra}", at_key=True)]
        return [doc.problem(parts, "matches more than one of the allowed forms; make it unambiguous")]
    branches = _branch_errors(error)
    depth0 = len(parts)

    def at_root(e: ValidationError) -> bool:
        return len(e.absolute_path) == depth0

    if names and all(all(e.validator == "required" and at_root(e) for e in errs) for errs in branches.values()):
        return [doc.problem(parts, f"missing one of the fields {_quoted_alternatives(names)}", at_key=True)]

    if all(any(e.validator == "type" and at_root(e) for e in errs) for errs in branches.values()):
        types: list[str] = []
        for errs in branches.values():
            for e in errs:
                if e.validator == "type" and at_root(e):
                    rule: Any = e.validator_value
                    wanted: list[str] = rule if isinstance(rule, list) else [rule]
                    types.extend(t for t in wanted if t not in types)
        return [doc.problem(parts, f"expected {_types_phrase(types)}, got {describe(error.instance)}")]

    def score(item: tuple[int, list[ValidationError]]) -> tuple[int, int, int, int]:
        _, errs = item
        wrong_type = any(e.validator == "type" and at_root(e) for e in errs)
        wrong_kind = any(
            e.validator in ("const", "enum") and len(e.absolute_path) <= depth0 + 1 for e in errs
        )
        deepest = max(len(e.absolute_path) for e in errs)
        return (int(wrong_type), int(wrong_kind), len(errs), -deepest)

    _, best = min(branches.items(), key=score)
    out: list[Problem] = []
    for sub in best:
        out.extend(_problems_for(doc, sub))
    return out
