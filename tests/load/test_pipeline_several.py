"""kbuild.load.pipeline: pipeline files -> Pipeline, and every mistake reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline
from tests.helpers.spec import IRIS, WriteSpec, mutate, problems_of
from tests.helpers.text import replace_once

# ----------------------------------------------------------------- several at once


def test_every_mistake_of_a_file_is_reported_in_file_order(write_spec: WriteSpec, tmp_path: Path) -> None:
    text = IRIS
    for old, new in [
        ("kbuild: 1", "kbuild: 3"),  # 1
        ("datatype: FP32, shape: [-1, 4]", "datatype: FP23, shape: [-1, 4]"),  # 5
        ("    model: models/iris.onnx", "    modle: models/iris.onnx"),  # 12
        ("name: labels", "name: model"),  # 16
        ("input: probs", "input: prob"),  # 18
        ("  grpc: {port: 8081}", "  grcp: {port: 8081}"),  # 23
        ("inputs: {features: [[5.1", "inputs: {feature: [[5.1"),  # 26
    ]:
        text = mutate(old, new, text)
    error = problems_of(write_spec(text))
    lines = [p.line or 0 for p in error.problems]
    assert lines == sorted(lines)
    expected = {
        ("$.kbuild", "unsupported format version 3"),
        ("$.inputs.features.datatype", "did you mean 'FP32'?"),
        ("$.steps[0].modle", "did you mean 'model'?"),
        ("$.steps[0]", "missing required field 'model'"),
        ("$.steps[1].name", "duplicate step name 'model'"),
        ("$.steps[1].input", "did you mean 'probs'?"),
        ("$.serve.grcp", "did you mean 'grpc'?"),
        ("$.samples[0].inputs.feature", "did you mean 'features'?"),
        ("$.samples[0].inputs", "missing input 'features'"),
    }
    for path, phrase in expected:
        assert any(p.path == path and phrase in p.message for p in error.problems), (path, phrase, error.render())
    assert len(error.problems) == len(expected)
    assert error.message.endswith(f"{len(expected)} problems")


def test_syntax_errors_are_spec_errors_not_tracebacks(write_spec: WriteSpec) -> None:
    error = problems_of(write_spec(mutate("labels: [setosa, versicolor, virginica]", "labels: [setosa, versicolor")))
    rendered = error.render()
    assert "invalid YAML" in rendered
    assert "starts at line 19, column 13" in rendered
    assert "Traceback" not in rendered


def test_empty_pipeline_file(write_spec: WriteSpec) -> None:
    error = problems_of(write_spec("# nothing yet\n"))
    assert "the file is empty" in error.render()


def test_missing_pipeline_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_pipeline(tmp_path / "nope.yaml")
    assert info.value.exit_code == 3
    assert info.value.render() == f"{tmp_path / 'nope.yaml'}: no such file"


# ---------------------------------------------------------------------- step types

PYTHON_STEPS = """\
kbuild: 1
name: py
inputs:
  x: {datatype: FP32, shape: [-1]}
outputs:
  y: {datatype: FP32, shape: [-1]}
steps:
STEPS"""


def python_pipeline(steps: str) -> str:
    return replace_once(PYTHON_STEPS, "STEPS", steps)


def test_python_step_without_outputs_may_set_anything(write_spec: WriteSpec, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mine.py").write_text("def make(config):\n    return lambda v: v\n")
    spec = write_spec(
        python_pipeline(
            "  - name: mine\n"
            "    type: python\n"
            "    function: mine:make\n"
            "    code: code/mine.py\n"
            "    config: {factor: 2}\n"
            "    requirements: [numpy>=1.26]\n"
            "  - name: scaled\n"
            "    type: scale\n"
            "    input: made_up\n"
            "    output: y\n"
            "    mean: 0\n"
            "    std: [1, 2]\n"
        )
    )
    pipeline = load_pipeline(spec)
    mine, scaled = pipeline.steps
    assert mine.writes is None and mine.reads == ()
    assert mine.code == tmp_path / "code" / "mine.py"
    assert mine.requirements == ("numpy>=1.26",)
    assert mine.config["config"] == {"factor": 2}
    assert scaled.reads == ("made_up",) and scaled.writes == ("y",)


def test_python_step_with_declared_io(write_spec: WriteSpec, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    spec = write_spec(
        python_pipeline(
            "  - name: mine\n"
            "    type: python\n"
            "    function: pkg.mod:make\n"
            "    code: pkg\n"
            "    inputs: [x]\n"
            "    outputs: [z]\n"
            "  - name: thr\n"
            "    type: threshold\n"
            "    input: zz\n"  # line 16
            "    output: y\n"
            "    threshold: 0.5\n"
        )
    )
    error = problems_of(spec)
    [problem] = error.problems
    assert (problem.line, problem.column, problem.path) == (16, 12, "$.steps[1].input")
    assert "unknown variable 'zz'; did you mean 'z'?" in problem.message


@pytest.mark.parametrize(
    "step, line, column, path, phrase",
    [
        (
            "  - name: mine\n    type: python\n    function: mine.make\n    outputs: [y]\n",
            10,
            15,
            "$.steps[0].function",
            "'module.path:factory'",
        ),
        (
            "  - name: mine\n    type: python\n    function: m:f\n    code: nowhere.py\n    outputs: [y]\n",
            11,
            11,
            "$.steps[0].code",
            "code not found: 'nowhere.py'",
        ),
        (
            "  - name: mine\n    type: python\n    function: m:f\n    outputs: [y, 2x]\n",
            11,
            18,
            "$.steps[0].outputs[1]",
            "a variable name",
        ),
        (
            "  - name: f\n    type: fields\n    fields: [x, w]\n    output: y\n    datatype: FP32\n",
            10,
            17,
            "$.steps[0].fields[1]",
            "unknown variable 'w'",
        ),
        (
            "  - name: f\n    type: sklearn\n    model: models/iris.onnx\n    method: predict_probs\n"
            "    input: x\n    output: y\n",
            11,
            13,
            "$.steps[0].method",
            "did you mean 'predict_proba'?",
        ),
        (
            "  - name: i\n    type: image\n    input: x\n    output: y\n    size: [224]\n",
            12,
            11,
            "$.steps[0].size",
            "expected exactly 2 items, got 1",
        ),
        (
            "  - name: i\n    type: image\n    input: x\n    output: y\n    size: [224, 224]\n    layout: NCWH\n",
            13,
            13,
            "$.steps[0].layout",
            "did you mean 'NCHW'?",
        ),
        (
            "  - name: t\n    type: threshold\n    input: x\n    output: y\n",
            8,
            5,
            "$.steps[0]",
            "missing required field 'threshold' in a threshold step",
        ),
        (
            "  - name: p\n    type: mlflow\n    model: models\n    input: x\n    output: y\n"
            "    sha256: '" + "a" * 64 + "'\n",
            13,
            13,
            "$.steps[0].sha256",
            "only be checked for a file",
        ),
    ],
    ids=[
        "python-function",
        "python-code-missing",
        "python-output-name",
        "fields-unknown",
        "sklearn-method",
        "image-size",
        "image-layout",
        "threshold-missing",
        "sha256-of-folder",
    ],
)
def test_step_type_mistakes(write_spec: WriteSpec, step: str, line: int, column: int, path: str, phrase: str) -> None:
    error = problems_of(write_spec(python_pipeline(step)))
    assert any((p.line, p.column, p.path) == (line, column, path) and phrase in p.message for p in error.problems), (
        error.render()
    )


def test_model_folder_is_fine_without_sha256(write_spec: WriteSpec, tmp_path: Path) -> None:
    spec = write_spec(
        python_pipeline("  - name: p\n    type: mlflow\n    model: models\n    input: x\n    output: y\n")
    )
    [step] = load_pipeline(spec).steps
    assert step.model == tmp_path / "models" and step.sha256 is None


def test_unknown_step_type_does_not_cascade(write_spec: WriteSpec) -> None:
    spec = write_spec(
        python_pipeline(
            "  - name: a\n    type: tourch\n    model: m.pt\n"
            "  - name: b\n    type: scale\n    input: whatever\n    output: y\n    mean: 0\n    std: 1\n"
        )
    )
    error = problems_of(spec)
    assert [p.path for p in error.problems] == ["$.steps[0].type"]


def test_variable_set_by_a_later_step(write_spec: WriteSpec) -> None:
    spec = write_spec(
        python_pipeline(
            "  - name: a\n    type: scale\n    input: z\n    output: y\n    mean: 0\n    std: 1\n"
            "  - name: b\n    type: scale\n    input: x\n    output: z\n    mean: 0\n    std: 1\n"
        )
    )
    [problem] = problems_of(spec).problems
    assert problem.path == "$.steps[0].input"
    assert "set only by a later step, 'b' (steps[1])" in problem.message


KAFKA = """\
serve:
  kafka:
    bootstrap_servers: localhost:9092
    group_id: iris
    source: {topic: data, encoding: json}
    sink: {topic: predict, encoding: msgpack}
    dead_letter: {topic: data-errors}
    models: {topic: model, step: model}
    client: {session.timeout.ms: 6000}
"""


def test_kafka_serve_is_accepted(write_spec: WriteSpec) -> None:
    text = mutate(IRIS[IRIS.index("serve:") : IRIS.index("samples:")], KAFKA)
    pipeline = load_pipeline(write_spec(text))
    assert pipeline.serve["kafka"]["source"] == {"topic": "data", "encoding": "json"}
    assert "http" not in pipeline.serve


@pytest.mark.parametrize(
    "old, new, path, phrase",
    [
        ("encoding: json}", "encoding: jsn}", "$.serve.kafka.source.encoding", "did you mean 'json'?"),
        ("step: model}", "step: labels}", "$.serve.kafka.models.step", "has no model to update"),
        ("step: model}", "step: modl}", "$.serve.kafka.models.step", "did you mean 'model'?"),
        ("    group_id: iris\n", "    groupid: iris\n", "$.serve.kafka.groupid", "did you mean 'group_id'?"),
        ("    source: {topic: data, encoding: json}\n", "", "$.serve.kafka", "missing required field 'source'"),
    ],
)
def test_kafka_mistakes(write_spec: WriteSpec, old: str, new: str, path: str, phrase: str) -> None:
    text = mutate(IRIS[IRIS.index("serve:") : IRIS.index("samples:")], mutate(old, new, KAFKA))
    error = problems_of(write_spec(text))
    assert any(p.path == path and phrase in p.message for p in error.problems), error.render()
