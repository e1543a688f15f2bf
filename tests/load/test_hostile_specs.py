"""Specs as an attacker or an unlucky user writes them: each is refused with
exit 3, a located message and no traceback, in seconds and bounded memory.
A seed corpus of the cases once found, then a property over mutated specs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline
from tests.helpers.build import EXAMPLES, REPO, copy_example
from tests.helpers.text import replace_once

EXAMPLE = (EXAMPLES / "iris" / "pipeline.yaml").read_text()


def validate(pipeline: Path, timeout: float = 30) -> tuple[int, str, float]:
    """`kbuild validate` in a child process, with its memory capped at 1 GiB."""
    started = time.monotonic()
    proc = subprocess.run(
        ["prlimit", "--as=1073741824", sys.executable, "-m", "kbuild", "validate", str(pipeline)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


def written(folder: Path, text: str) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    return copy_example("iris", tmp_path)


def edited(old: str, new: str) -> Callable[[Path], Path]:
    return lambda folder: written(folder, replace_once(EXAMPLE, old, new))


def fifo_model(folder: Path) -> Path:
    os.mkfifo(folder / "models" / "fifo")
    return written(folder, replace_once(EXAMPLE, "models/iris.onnx", "models/fifo"))


def link_to_dev_zero(folder: Path) -> Path:
    (folder / "zero.yaml").symlink_to("/dev/zero")
    return folder / "zero.yaml"


def alias_bomb(folder: Path) -> Path:
    return written(folder, 'a: &a "' + "x" * 1_000_000 + '"\nb: [' + ", ".join(["*a"] * 20_000) + "]\n")


def deep_yaml(folder: Path) -> Path:
    return written(folder, EXAMPLE + "x: " + "[" * 5000 + "]" * 5000 + "\n")


def deep_json(folder: Path) -> Path:
    (folder / "p.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    return folder / "p.json"


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "type-is-a-list": (edited("type: onnx", "type: [onnx]"), "13:11: $.steps[0].type: expected one of"),
    "type-is-a-mapping": (edited("type: classify", "type: {a: 1}"), "$.steps[1].type: expected one of"),
    "model-name-too-long": (
        edited("models/iris.onnx", "models/" + "x" * 300),
        "has a name longer than the file system allows",
    ),
    "model-is-dev-zero": (
        edited("models/iris.onnx", "/dev/zero"),
        "model file '/dev/zero' is a character device, not a regular file",
    ),
    "model-is-a-fifo": (fifo_model, "is a FIFO (named pipe), not a regular file"),
    "pipeline-is-a-link-to-dev-zero": (link_to_dev_zero, "zero.yaml: is a character device, not a regular file"),
    "aliases-amplify-by-size": (alias_bomb, "aliases expand to more than"),
    "yaml-nested-too-deep": (deep_yaml, "nested deeper than 64 levels here"),
    # the object's brace is the first level: the 64th bracket passes the limit
    "json-nested-too-deep": (deep_json, "p.json:1:70: $: nested deeper than 64 levels here"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_spec_is_refused_quickly_and_clearly(iris: Path, case: str) -> None:
    make, expected = CASES[case]
    code, err, seconds = validate(make(iris))
    assert code == 3, err
    assert "Traceback" not in err and "internal error" not in err
    assert expected in err, err
    assert seconds < 20


# A YAML-ish alphabet: mutations that reach the loader's and the checks' corners.
_TOKENS = st.sampled_from(
    [
        "[",
        "]",
        "{",
        "}",
        ":",
        "- ",
        "&a ",
        "*a",
        "<<: ",
        "!!python/object ",
        "\n",
        "  ",
        "\t",
        '"',
        "'",
        "#",
        "type: [onnx]",
        "model: /dev/zero",
        "1e400",
        "NaN",
        "~",
        "null",
        "\x00",
        "\xff",
        "é",
        "---\n",
        "? ",
    ]
)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), _TOKENS), min_size=1, max_size=6))
def test_mutated_specs_give_a_spec_error_or_a_pipeline(iris: Path, edits: list[tuple[float, int, str]]) -> None:
    text = EXAMPLE
    for where, cut, token in edits:
        at = int(where * len(text))
        text = text[:at] + token + text[at + cut :]
    path = iris / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_pipeline(path)
    except SpecError as error:
        assert error.exit_code == 3 and error.render()
