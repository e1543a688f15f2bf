"""kbuild.load.documents: loading with positions, and friendly schema problems."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from kbuild.errors import Problem
from kbuild.load.documents import (
    Document,
    load_document,
    load_schema,
    schema_problems,
)
from tests.helpers.documents import Write

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
                {
                    "type": "object",
                    "required": ["kind", "path"],
                    "additionalProperties": False,
                    "properties": {"kind": {"const": "file"}, "path": {"type": "string"}},
                },
                {
                    "type": "object",
                    "required": ["kind", "url"],
                    "additionalProperties": False,
                    "properties": {"kind": {"const": "web"}, "url": {"type": "string"}, "timeout": {"type": "number"}},
                },
            ]
        },
        "io": {"type": "object", "oneOf": [{"required": ["input"]}, {"required": ["inputs"]}]},
    },
}


def problems_for(write: Write, text: str) -> list[Problem]:
    return schema_problems(load_document(write(text)), SCHEMA)


# (id, yaml text, line, column, path, phrases)
SCHEMA_CASES = [
    (
        "unknown-field",
        "name: a\nkind: alpha\nnmae: b\n",
        3,
        1,
        "$.nmae",
        ["unknown field 'nmae' in the thing", "did you mean 'name'?"],
    ),
    (
        "unknown-field-no-guess",
        "name: a\nkind: alpha\nzzzz: b\n",
        3,
        1,
        "$.zzzz",
        ["unknown field 'zzzz'", "allowed fields: name, code, kind"],
    ),
    ("required", "name: a\n", 1, 1, "$", ["missing required field 'kind' in the thing"]),
    (
        "enum",
        "name: a\nkind: alpah\n",
        2,
        7,
        "$.kind",
        ["unknown kind 'alpah'", "did you mean 'alpha'?", "Expected one of: alpha, beta"],
    ),
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
    (
        "property-names",
        "name: a\nkind: alpha\nvars:\n  ok: 1\n  Bad: 2\n",
        5,
        3,
        "$.vars.Bad",
        ["invalid name 'Bad': expected a lower-case name"],
    ),
    ("const-message", "name: a\nkind: alpha\nversion: 2\n", 3, 10, "$.version", ["version 2 is not supported"]),
    (
        "any-of-types",
        "name: a\nkind: alpha\nscale: abc\n",
        3,
        8,
        "$.scale",
        ["expected a number or a list, got a string ('abc')"],
    ),
    (
        "any-of-best-branch",
        "name: a\nkind: alpha\nscale: [1, x]\n",
        3,
        12,
        "$.scale[1]",
        ["expected a number, got a string ('x')"],
    ),
    (
        "one-of-by-discriminator",
        "name: a\nkind: alpha\nsource:\n  kind: web\n  url: 3\n",
        5,
        8,
        "$.source.url",
        ["expected a string, got an integer (3)"],
    ),
    (
        "one-of-unknown-field",
        "name: a\nkind: alpha\nsource:\n  kind: web\n  url: x\n  timout: 3\n",
        6,
        3,
        "$.source.timout",
        ["did you mean 'timeout'?"],
    ),
    (
        "one-of-required-neither",
        "name: a\nkind: alpha\nio: {}\n",
        3,
        1,
        "$.io",
        ["missing one of the fields 'input' or 'inputs'"],
    ),
    (
        "one-of-required-both",
        "name: a\nkind: alpha\nio: {input: 1, inputs: 2}\n",
        3,
        1,
        "$.io",
        ["give only one of 'input' or 'inputs'"],
    ),
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
        "size: 0\n"  # 1
        "nmae: x\n"  # 2 (and 'name' missing: at the top, line 1)
        "kind: gamma\n"  # 3
        "tags: [1, 1]\n",  # 4: two type errors (one per item) and duplicates
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
