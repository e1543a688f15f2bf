"""kbuild.documents: loading with positions, and friendly schema problems."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from kbuild.documents import (
    Document,
    did_you_mean,
    json_path,
    load_document,
    load_schema,
    schema_problems,
)
from kbuild.errors import Problem, SpecError

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def write(text: str | bytes, name: str = "doc.yaml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write


def load_error(path: Path, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_document(path, **kwargs)
    assert info.value.exit_code == 3
    assert info.value.problems
    return info.value


# ------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "parts, expected",
    [
        ((), "$"),
        (("steps", 0, "type"), "$.steps[0].type"),
        (("inputs", "float_input:0"), '$.inputs["float_input:0"]'),
        (("kbuild-spin",), "$.kbuild-spin"),
        (("a b", 3), '$["a b"][3]'),
    ],
)
def test_json_path(parts: tuple[str | int, ...], expected: str) -> None:
    assert json_path(parts) == expected


@pytest.mark.parametrize(
    "word, choices, aliases, expected",
    [
        ("modle", ["model", "name", "type"], None, "model"),
        ("fp32", ["FP16", "FP32"], None, "FP32"),
        ("float32", ["FP32"], {"float32": "FP32"}, "FP32"),
        ("Float32", ["FP32"], {"float32": "FP32"}, "FP32"),
        ("zzz", ["model", "name"], None, None),
        ("model", ["model"], None, None),  # an exact match is no suggestion
    ],
)
def test_did_you_mean(word: str, choices: list[str], aliases: dict[str, str] | None, expected: str | None) -> None:
    assert did_you_mean(word, choices, aliases) == expected


# ----------------------------------------------------------------------- positions

YAML_DOC = """\
name: iris
inputs:
  features: {datatype: FP32, shape: [-1, 4]}
steps:
  - name: model
    labels:
      - a
      - b
"""


def test_yaml_positions(write: Write) -> None:
    doc = load_document(write(YAML_DOC))
    assert doc.file.endswith("doc.yaml")
    assert doc.data == {
        "name": "iris",
        "inputs": {"features": {"datatype": "FP32", "shape": [-1, 4]}},
        "steps": [{"name": "model", "labels": ["a", "b"]}],
    }
    assert doc.position(()) == (1, 1)
    assert doc.position(("name",)) == (1, 7)
    assert doc.key_position(("name",)) == (1, 1)
    # a block mapping/list value: located at its key, where a reader looks
    assert doc.position(("inputs",)) == (2, 1)
    assert doc.position(("inputs", "features")) == (3, 13)  # flow mapping on the key's line
    assert doc.key_position(("inputs", "features")) == (3, 3)
    assert doc.position(("inputs", "features", "shape", 1)) == (3, 42)
    assert doc.position(("steps", 0)) == (5, 5)
    assert doc.position(("steps", 0, "labels")) == (6, 5)
    assert doc.position(("steps", 0, "labels", 1)) == (8, 9)
    # unknown nodes: the nearest ancestor
    assert doc.position(("steps", 0, "model")) == (5, 5)
    assert doc.position(("steps", 7, "x")) == (4, 1)
    assert doc.position(("nope", "deeper")) == (1, 1)
    problem = doc.problem(("steps", 0, "labels", 1), "bad")
    assert problem == Problem(doc.file, 8, 9, "$.steps[0].labels[1]", "bad")


def test_json_positions(write: Write) -> None:
    text = '{\n  "name": "iris",\n  "steps": [\n    {"name": "m", "labels": ["a", "b"]}\n  ],\n  "n": -1.5e3\n}\n'
    doc = load_document(write(text, "doc.json"))
    assert doc.data == json.loads(text)
    assert doc.position(()) == (1, 1)
    assert doc.position(("name",)) == (2, 11)
    assert doc.key_position(("name",)) == (2, 3)
    assert doc.position(("steps",)) == (3, 12)
    assert doc.position(("steps", 0)) == (4, 5)
    assert doc.position(("steps", 0, "labels", 1)) == (4, 35)
    assert doc.position(("n",)) == (6, 8)
    assert doc.position(("steps", 0, "missing")) == (4, 5)


def test_yaml_values_are_plain_data(write: Write) -> None:
    doc = load_document(write(
        "on: yes\n"
        "date: 2024-01-01\n"
        "n: 3\n"
        "f: 1.5\n"
        "nothing:\n"
        "quoted: '3'\n"
        "1: one\n"
    ))
    assert doc.data == {
        "on": True, "date": "2024-01-01", "n": 3, "f": 1.5, "nothing": None, "quoted": "3", "1": "one",
    }


def test_anchors_aliases_and_merge_keys(write: Write) -> None:
    doc = load_document(write(
        "base: &base {port: 8080, host: a}\n"
        "http:\n"
        "  <<: *base\n"
        "  host: b\n"
        "labels: &labels [x, y]\n"
        "again: *labels\n"
    ))
    assert doc.data["http"] == {"port": 8080, "host": "b"}
    assert list(doc.data["http"]) == ["port", "host"]
    assert doc.data["again"] == ["x", "y"]
    assert doc.position(("http", "host")) == (4, 9)
    assert doc.position(("http", "port")) == (1, 20)  # where the merged value is written


# --------------------------------------------------------------- problems at load


def test_duplicate_yaml_key(write: Write) -> None:
    path = write("name: a\nserve:\n  http: {port: 1}\n  http: {port: 2}\n")
    error = load_error(path)
    [problem] = error.problems
    assert (problem.line, problem.column, problem.path) == (4, 3, "$.serve.http")
    assert "duplicate key 'http' (first at line 3)" in problem.message
    assert f"{path}:4:3: $.serve.http: duplicate key" in error.render()

    lenient = load_document(path, strict=False)
    assert lenient.problems == error.problems
    assert lenient.data["serve"]["http"] == {"port": 2}  # the last one wins
    assert schema_problems(lenient, {"type": "object"}) == error.problems


def test_duplicate_json_key(write: Write) -> None:
    error = load_error(write('{\n  "a": 1,\n  "b": {"c": 1, "c": 2}\n}\n', "doc.json"))
    [problem] = error.problems
    assert (problem.line, problem.column, problem.path) == (3, 17, "$.b.c")
    assert "duplicate key 'c'" in problem.message


def test_unsupported_tags_are_refused(write: Write) -> None:
    error = load_error(write("a: !!python/object/apply:os.system [echo hi]\nb: !custom x\nc: fine\n"))
    assert [(p.line, p.path) for p in error.problems] == [(1, "$.a"), (2, "$.b")]
    assert "unsupported YAML tag '!!python/object/apply:os.system'" in error.problems[0].message
    assert "unsupported YAML tag '!custom'" in error.problems[1].message


def test_complex_keys_are_refused(write: Write) -> None:
    error = load_error(write("? [a, b]\n: 1\nc: 2\n"))
    assert "a key must be a plain string" in error.render()


# (id, text, file name, line, column, phrases)
BROKEN = [
    ("unclosed-bracket", "name: a\nshape: [-1, 4\nsteps: x\n", "doc.yaml", 3, 6,
     ["invalid YAML", "expected ',' or ']'", "flow sequence that starts at line 2, column 8"]),
    ("unclosed-bracket-at-end", "name: a\nshape: [-1, 4\n", "doc.yaml", 3, 1,
     ["invalid YAML", "flow sequence that starts at line 2, column 8"]),
    ("bad-indentation", "steps:\n  - name: a\n   type: onnx\n", "doc.yaml", 3, 4,
     ["invalid YAML", "check the indentation"]),
    ("over-indented", "steps:\n  - name: a\n    type: onnx\n      model: x\n", "doc.yaml", 4, 12,
     ["invalid YAML", "mapping values are not allowed here", "indentation"]),
    ("tab-indentation", "steps:\n\t- name: a\n", "doc.yaml", 2, 1,
     ["invalid YAML", "'\\t'", "tabs", "spaces"]),
    ("unclosed-quote", "name: 'iris\nversion: 1\n", "doc.yaml", 3, 1,
     ["invalid YAML", "quoted scalar that starts at line 1, column 7"]),
    ("two-documents", "a: 1\n---\nb: 2\n", "doc.yaml", 2, 1,
     ["invalid YAML", "one document"]),
    ("undefined-alias", "a: *nope\n", "doc.yaml", 1, 4,
     ["invalid YAML", "undefined alias", "anchor"]),
    ("control-character", "a: b\x07\n", "doc.yaml", 1, 5,
     ["invalid YAML", "special characters are not allowed"]),
    ("json-missing-comma", '{\n  "a": 1\n  "b": 2\n}\n', "doc.json", 3, 3,
     ["invalid JSON", "Expecting ',' delimiter"]),
    ("json-trailing-comma", '{"a": [1, 2,]}', "doc.json", 1, 13,
     ["invalid JSON"]),
]


@pytest.mark.parametrize(
    "text, name, line, column, phrases", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_syntax_errors(write: Write, text: str, name: str, line: int, column: int, phrases: list[str]) -> None:
    path = write(text, name)
    error = load_error(path)
    [problem] = error.problems
    rendered = error.render()
    assert (problem.line, problem.column) == (line, column), rendered
    assert f"{path}:{line}:{column}: $: " in rendered
    for phrase in phrases:
        assert phrase in problem.message, rendered
    assert "Traceback" not in rendered


@pytest.mark.parametrize(
    "text, name",
    [("", "doc.yaml"), ("   \n\n", "doc.yaml"), ("# only a comment\n", "doc.yaml"), ("~\n", "doc.yaml"),
     ("---\n", "doc.yaml"), ("", "doc.json"), ("\n  \n", "doc.json")],
    ids=["empty", "blank", "comments", "null", "document-marker", "json-empty", "json-blank"],
)
def test_empty_file(write: Write, text: str, name: str) -> None:
    error = load_error(write(text, name))
    assert "the file is empty" in error.problems[0].message
    assert error.problems[0].line == 1


@pytest.mark.parametrize(
    "text, name, got",
    [("- a\n- b\n", "doc.yaml", "got a list"), ("just text\n", "doc.yaml", "got a string ('just text')"),
     ("42\n", "doc.yaml", "got an integer (42)"), ("[1, 2]", "doc.json", "got a list")],
)
def test_top_level_must_be_a_mapping(write: Write, text: str, name: str, got: str) -> None:
    error = load_error(write(text, name))
    assert "the top level must be a mapping" in error.render()
    assert got in error.render()


def test_alias_bomb_is_refused(write: Write) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    error = load_error(write("\n".join(lines) + "\n"))
    assert "aliases expand to more than" in error.render()


def test_recursive_alias_is_refused(write: Write) -> None:
    error = load_error(write("a: &a\n  b: *a\n"))
    assert "refers to the node that contains it" in error.render()


def test_deep_nesting_is_an_error_not_a_crash(write: Write) -> None:
    try:
        load_document(write("a: " + "[" * 5000 + "]" * 5000 + "\n"))
    except SpecError as error:
        assert "nested too deeply" in error.render()


@pytest.mark.parametrize(
    "make, phrase",
    [
        (lambda tmp: tmp / "missing.yaml", "missing.yaml: no such file"),
        (lambda tmp: tmp, "is a folder"),
    ],
    ids=["missing", "folder"],
)
def test_unreadable(tmp_path: Path, make: Callable[[Path], Path], phrase: str) -> None:
    # a file that cannot be read at all is one line, not a located problem
    with pytest.raises(SpecError) as info:
        load_document(make(tmp_path))
    assert info.value.exit_code == 3 and not info.value.problems
    assert phrase in info.value.render()


def test_not_utf8(write: Write) -> None:
    error = load_error(write(b"name: a\nlabel: caf\xe9\n"))
    [problem] = error.problems
    assert (problem.line, problem.column) == (2, 11)
    assert "not UTF-8" in problem.message


def test_utf8_bom_is_accepted(write: Write) -> None:
    assert load_document(write("\ufeffname: a\n".encode("utf-8"))).data == {"name": "a"}


# -------------------------------------------------------------------------- schemas


def test_load_schema() -> None:
    schema = load_schema("pipeline")
    Draft202012Validator.check_schema(schema)
    assert schema == load_schema("pipeline.schema.json")
    schema["title"] = "changed"
    assert load_schema("pipeline")["title"] != "changed"  # callers get their own copy


def test_load_schema_names_a_missing_schema() -> None:
    with pytest.raises(FileNotFoundError, match="no-such"):
        load_schema("no-such")


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "the thing",
    "type": "object",
    "required": ["name", "kind"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]+$", "x-expected": "lower-case letters"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "kind": {"title": "kind", "enum": ["alpha", "beta"]},
        "size": {"type": "integer", "minimum": 1, "maximum": 10},
        "tags": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}},
        "vars": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$", "x-expected": "a lower-case name"}},
        "version": {"const": 1, "x-message": "version {value} is not supported"},
        "scale": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
        "source": {
            "oneOf": [
                {"type": "object", "required": ["kind", "path"], "additionalProperties": False,
                 "properties": {"kind": {"const": "file"}, "path": {"type": "string"}}},
                {"type": "object", "required": ["kind", "url"], "additionalProperties": False,
                 "properties": {"kind": {"const": "web"}, "url": {"type": "string"}, "timeout": {"type": "number"}}},
            ]
        },
        "io": {"type": "object", "oneOf": [{"required": ["input"]}, {"required": ["inputs"]}]},
    },
}


def problems_for(write: Write, text: str) -> list[Problem]:
    return schema_problems(load_document(write(text)), SCHEMA)


# (id, yaml text, line, column, path, phrases)
SCHEMA_CASES = [
    ("unknown-field", "name: a\nkind: alpha\nnmae: b\n", 3, 1, "$.nmae",
     ["unknown field 'nmae' in the thing", "did you mean 'name'?"]),
    ("unknown-field-no-guess", "name: a\nkind: alpha\nzzzz: b\n", 3, 1, "$.zzzz",
     ["unknown field 'zzzz'", "allowed fields: name, code, kind"]),
    ("required", "name: a\n", 1, 1, "$", ["missing required field 'kind' in the thing"]),
    ("enum", "name: a\nkind: alpah\n", 2, 7, "$.kind",
     ["unknown kind 'alpah'", "did you mean 'alpha'?", "Expected one of: alpha, beta"]),
    ("enum-no-guess", "name: a\nkind: zzz\n", 2, 7, "$.kind", ["unknown kind 'zzz'; expected one of: alpha, beta"]),
    ("enum-not-a-string", "name: a\nkind: 3\n", 2, 7, "$.kind", ["expected one of: alpha, beta; got an integer (3)"]),
    ("type", "name: [a]\nkind: alpha\n", 1, 7, "$.name", ["expected a string, got a list"]),
    ("type-mapping", "name: a\nkind: alpha\ntags: {a: 1}\n", 3, 7, "$.tags", ["expected a list, got a mapping"]),
    ("pattern-explained", "name: Abc\nkind: alpha\n", 1, 7, "$.name", ["expected lower-case letters, got 'Abc'"]),
    ("pattern-raw", "name: a\nkind: alpha\ncode: ab\n", 3, 7, "$.code", ["'ab' does not match the pattern ^[A-Z]{3}$"]),
    ("minimum", "name: a\nkind: alpha\nsize: 0\n", 3, 7, "$.size", ["must be at least 1, got 0"]),
    ("maximum", "name: a\nkind: alpha\nsize: 11\n", 3, 7, "$.size", ["must be at most 10, got 11"]),
    ("min-items", "name: a\nkind: alpha\ntags: []\n", 3, 7, "$.tags", ["must not be empty"]),
    ("unique-items", "name: a\nkind: alpha\ntags: [x, y, x]\n", 3, 7, "$.tags", ["contains duplicates: 'x'"]),
    ("property-names", "name: a\nkind: alpha\nvars:\n  ok: 1\n  Bad: 2\n", 5, 3, "$.vars.Bad",
     ["invalid name 'Bad': expected a lower-case name"]),
    ("const-message", "name: a\nkind: alpha\nversion: 2\n", 3, 10, "$.version", ["version 2 is not supported"]),
    ("any-of-types", "name: a\nkind: alpha\nscale: abc\n", 3, 8, "$.scale",
     ["expected a number or a list, got a string ('abc')"]),
    ("any-of-best-branch", "name: a\nkind: alpha\nscale: [1, x]\n", 3, 12, "$.scale[1]",
     ["expected a number, got a string ('x')"]),
    ("one-of-by-discriminator", "name: a\nkind: alpha\nsource:\n  kind: web\n  url: 3\n", 5, 8, "$.source.url",
     ["expected a string, got an integer (3)"]),
    ("one-of-unknown-field", "name: a\nkind: alpha\nsource:\n  kind: web\n  url: x\n  timout: 3\n", 6, 3,
     "$.source.timout", ["did you mean 'timeout'?"]),
    ("one-of-required-neither", "name: a\nkind: alpha\nio: {}\n", 3, 1, "$.io",
     ["missing one of the fields 'input' or 'inputs'"]),
    ("one-of-required-both", "name: a\nkind: alpha\nio: {input: 1, inputs: 2}\n", 3, 1, "$.io",
     ["give only one of 'input' or 'inputs'"]),
]


@pytest.mark.parametrize(
    "text, line, column, path, phrases", [case[1:] for case in SCHEMA_CASES], ids=[case[0] for case in SCHEMA_CASES]
)
def test_schema_messages(write: Write, text: str, line: int, column: int, path: str, phrases: list[str]) -> None:
    problems = problems_for(write, text)
    assert len(problems) == 1, problems
    [problem] = problems
    assert (problem.line, problem.column, problem.path) == (line, column, path), problem
    for phrase in phrases:
        assert phrase in problem.message, problem.message


def test_all_schema_problems_at_once_sorted_and_unique(write: Write) -> None:
    problems = problems_for(
        write,
        "size: 0\n"          # 1
        "nmae: x\n"          # 2 (and 'name' missing: at the top, line 1)
        "kind: gamma\n"      # 3
        "tags: [1, 1]\n"     # 4: two type errors (one per item) and duplicates
    )
    keys = [(p.line, p.column) for p in problems]
    assert keys == sorted(keys)
    assert [p.path for p in problems] == ["$", "$.size", "$.nmae", "$.kind", "$.tags", "$.tags[0]", "$.tags[1]"]
    assert len(set(problems)) == len(problems)
    assert problems[0].message == "missing required field 'name' in the thing"


def test_valid_document_has_no_problems(write: Write) -> None:
    assert problems_for(write, "name: a\nkind: beta\nsource: {kind: file, path: x}\nscale: [1, 2]\n") == []


def test_document_problem_helper() -> None:
    doc = Document({"a": {"b": 1}}, "f.yaml", {(): (1, 1), ("a",): (1, 4), ("a", "b"): (1, 8)}, {("a",): (1, 1)})
    assert doc.problem(("a", "b", "c"), "m").render() == "f.yaml:1:8: $.a.b.c: m"
    assert doc.problem(("a",), "m", at_key=True).render() == "f.yaml:1:1: $.a: m"
