"""kbuild.load.documents: loading with positions, and friendly schema problems."""

from __future__ import annotations

import json

import pytest

from kbuild.errors import Problem
from kbuild.load.documents import (
    did_you_mean,
    json_path,
    load_document,
)
from tests.helpers.documents import Write

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
    doc = load_document(write("on: yes\ndate: 2024-01-01\nn: 3\nf: 1.5\nnothing:\nquoted: '3'\n1: one\n"))
    assert doc.data == {
        "on": True,
        "date": "2024-01-01",
        "n": 3,
        "f": 1.5,
        "nothing": None,
        "quoted": "3",
        "1": "one",
    }


def test_anchors_aliases_and_merge_keys(write: Write) -> None:
    doc = load_document(
        write(
            "base: &base {port: 8080, host: a}\nhttp:\n  <<: *base\n  host: b\nlabels: &labels [x, y]\nagain: *labels\n"
        )
    )
    assert doc.data["http"] == {"port": 8080, "host": "b"}
    assert list(doc.data["http"]) == ["port", "host"]
    assert doc.data["again"] == ["x", "y"]
    assert doc.position(("http", "host")) == (4, 9)
    assert doc.position(("http", "port")) == (1, 20)  # where the merged value is written
