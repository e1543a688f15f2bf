"""kbuild.load.documents: loading with positions, and friendly schema problems."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.errors import SpecError
from kbuild.load.documents import (
    load_document,
    schema_problems,
)
from tests.helpers.documents import Write, load_error

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
    (
        "unclosed-bracket",
        "name: a\nshape: [-1, 4\nsteps: x\n",
        "doc.yaml",
        3,
        6,
        ["invalid YAML", "expected ',' or ']'", "flow sequence that starts at line 2, column 8"],
    ),
    (
        "unclosed-bracket-at-end",
        "name: a\nshape: [-1, 4\n",
        "doc.yaml",
        3,
        1,
        ["invalid YAML", "flow sequence that starts at line 2, column 8"],
    ),
    (
        "bad-indentation",
        "steps:\n  - name: a\n   type: onnx\n",
        "doc.yaml",
        3,
        4,
        ["invalid YAML", "check the indentation"],
    ),
    (
        "over-indented",
        "steps:\n  - name: a\n    type: onnx\n      model: x\n",
        "doc.yaml",
        4,
        12,
        ["invalid YAML", "mapping values are not allowed here", "indentation"],
    ),
    ("tab-indentation", "steps:\n\t- name: a\n", "doc.yaml", 2, 1, ["invalid YAML", "'\\t'", "tabs", "spaces"]),
    (
        "unclosed-quote",
        "name: 'iris\nversion: 1\n",
        "doc.yaml",
        3,
        1,
        ["invalid YAML", "quoted scalar that starts at line 1, column 7"],
    ),
    ("two-documents", "a: 1\n---\nb: 2\n", "doc.yaml", 2, 1, ["invalid YAML", "one document"]),
    ("undefined-alias", "a: *nope\n", "doc.yaml", 1, 4, ["invalid YAML", "undefined alias", "anchor"]),
    ("control-character", "a: b\x07\n", "doc.yaml", 1, 5, ["invalid YAML", "special characters are not allowed"]),
    ("json-missing-comma", '{\n  "a": 1\n  "b": 2\n}\n', "doc.json", 3, 3, ["invalid JSON", "Expecting ',' delimiter"]),
    ("json-trailing-comma", '{"a": [1, 2,]}', "doc.json", 1, 13, ["invalid JSON"]),
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
    [
        ("", "doc.yaml"),
        ("   \n\n", "doc.yaml"),
        ("# only a comment\n", "doc.yaml"),
        ("~\n", "doc.yaml"),
        ("---\n", "doc.yaml"),
        ("", "doc.json"),
        ("\n  \n", "doc.json"),
    ],
    ids=["empty", "blank", "comments", "null", "document-marker", "json-empty", "json-blank"],
)
def test_empty_file(write: Write, text: str, name: str) -> None:
    error = load_error(write(text, name))
    assert "the file is empty" in error.problems[0].message
    assert error.problems[0].line == 1


@pytest.mark.parametrize(
    "text, name, got",
    [
        ("- a\n- b\n", "doc.yaml", "got a list"),
        ("just text\n", "doc.yaml", "got a string ('just text')"),
        ("42\n", "doc.yaml", "got an integer (42)"),
        ("[1, 2]", "doc.json", "got a list"),
    ],
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
