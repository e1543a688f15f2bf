"""YAML with the position of every node, duplicate keys reported, aliases bounded."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kbuild.errors import Problem, SpecError
from kbuild.load.positions import (
    MAX_ALIAS_EXPANSION,
    MAX_ALIAS_EXPANSION_CHARS,
    MAX_DEPTH,
    Document,
    Parts,
    Position,
    fatal,
    json_path,
    not_a_mapping,
)

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader, used only to compose nodes (never to construct objects)."""


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _mark(mark: Any) -> Position:
    return (mark.line + 1, mark.column + 1)


def _too_deep(text: str, file: str) -> None:
    """Refuse nesting past MAX_DEPTH before composing (which recurses), at the
    line where it passes: the scanner's tokens are read without recursion."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=_Loader):
            if isinstance(token, _OPENING):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = _mark(token.start_mark)
                    raise fatal(file, line, column, f"nested deeper than {MAX_DEPTH} levels here", "nested too deeply")
            elif isinstance(token, _CLOSING):
                depth -= 1
    except yaml.YAMLError:
        return  # the composer reports it, with its position


_OPENING = (
    yaml.FlowSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.BlockMappingStartToken,
)
_CLOSING = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)


def load_yaml(text: str, file: str) -> Document:
    _too_deep(text, file)
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
        raise fatal(file, line, column, f"invalid YAML: {reason}", "invalid YAML") from None
    finally:
        if loader is not None:
            loader.dispose()

    if node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
        raise fatal(
            file, 1, 1, "the file is empty: expected a mapping (key: value pairs) at the top level", "empty file"
        )

    assert loader is not None
    builder = _YamlBuilder(file, loader)
    data = builder.build(node)
    doc = Document(data, file, builder.positions, builder.key_positions, builder.problems)
    if not isinstance(data, dict):
        raise not_a_mapping(doc)
    return doc


_YAML_HINTS = [
    ("'\\t'", "YAML does not allow tabs for indentation; indent with spaces"),
    (
        "mapping values are not allowed here",
        "a value that contains ': ' must be put in quotes; otherwise check the indentation",
    ),
    ("expected <block end>", "check the indentation: this line is not aligned with the lines above it"),
    ("could not find expected ':'", "check the indentation, and that every key is followed by ':'"),
    ("expected a single document", "a file holds one document: remove the '---' line and what follows, or merge them"),
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
    return fatal(file, line, column, message, "invalid YAML")


class _AliasBomb(Exception):
    """Refused expansion, at the node where it passed a limit."""

    def __init__(self, message: str, node: Node) -> None:
        super().__init__(message)
        self.position = _mark(node.start_mark)


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
        self._expanded = 0  # characters repeated by aliases
        self._sizes: dict[int, int] = {}
        self._stack: set[int] = set()

    def build(self, node: Node) -> Any:
        self.positions[()] = _mark(node.start_mark)
        try:
            return self._value(node, ())
        except _AliasBomb as exc:
            raise fatal(self.file, *exc.position, str(exc), "refused: aliases") from None

    def _add_problem(self, node: Node, parts: Parts, message: str) -> None:
        line, column = _mark(node.start_mark)
        self.problems.append(Problem(self.file, line, column, json_path(parts), message))

    def _value(self, node: Node, parts: Parts) -> Any:
        ident = id(node)
        if ident in self._stack:
            line, column = _mark(node.start_mark)
            raise _AliasBomb(f"an alias refers to the node that contains it (line {line}, column {column})", node)
        if len(parts) > MAX_DEPTH:
            line, column = _mark(node.start_mark)
            raise _AliasBomb(
                f"aliases nest the document deeper than {MAX_DEPTH} levels (line {line}, column {column})", node
            )
        if ident in self._seen:
            self._repeats += 1
            self._expanded += self._size(node)
            if self._repeats > MAX_ALIAS_EXPANSION or self._expanded > MAX_ALIAS_EXPANSION_CHARS:
                raise _AliasBomb(
                    f"aliases expand to more than {MAX_ALIAS_EXPANSION} values or "
                    f"{MAX_ALIAS_EXPANSION_CHARS} characters; refusing the file "
                    "(this guards against 'billion laughs' files)",
                    node,
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

    def _size(self, node: Node) -> int:
        """Characters a node stands for (its scalars and their containers);
        a node's own aliases count at their size too."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, ScalarNode):
            size = len(node.value) + 1
        elif id(node) in self._stack:
            size = 1  # an alias to its own container: refused elsewhere
        else:
            children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            self._stack.add(id(node))
            try:
                size = 1 + sum(self._size(child) for child in children)
            finally:
                self._stack.discard(id(node))
        self._sizes[id(node)] = size
        return size

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
                    raise _AliasBomb("a merge key (<<) refers to the mapping that contains it", source)
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
                    f"duplicate key {key!r} (first at line {first.line + 1}); a key may appear only once in a mapping",
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
