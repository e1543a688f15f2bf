"""kbuild.load.pipeline: pipeline files -> Pipeline, and every mistake reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kbuild.load.pipeline import Pipeline, Step, TensorSpec, load_pipeline
from tests.helpers.spec import IRIS, MODEL_SHA, WriteSpec, mutate, problems_of

# ------------------------------------------------------------------ a good pipeline


def test_iris_loads_into_dataclasses(write_spec: WriteSpec, tmp_path: Path) -> None:
    pipeline = load_pipeline(write_spec())

    assert isinstance(pipeline, Pipeline)
    assert pipeline.path == tmp_path / "pipeline.yaml"
    assert pipeline.path.is_absolute()
    assert pipeline.name == "iris"
    assert pipeline.version == "1.0.0"
    assert pipeline.inputs == (TensorSpec("features", "FP32", (-1, 4)),)
    assert pipeline.outputs == (
        TensorSpec("label", "BYTES", (-1,)),
        TensorSpec("probability", "FP32", (-1,)),
    )
    model, labels = pipeline.steps
    assert isinstance(model, Step)
    assert model.name == "model" and model.type == "onnx"
    assert model.model == tmp_path / "models" / "iris.onnx"
    assert model.sha256 == MODEL_SHA
    assert model.code is None and model.requirements == ()
    assert model.reads == ("features",)
    assert model.writes == ("probs",)
    assert model.config["inputs"] == {"float_input": "features"}
    assert labels.type == "classify" and labels.model is None and labels.sha256 is None
    assert labels.reads == ("probs",)
    assert labels.writes == ("label", "probability")
    assert labels.config["labels"] == ["setosa", "versicolor", "virginica"]
    assert pipeline.serve == {
        "http": {"port": 8080},
        "grpc": {"port": 8081},
        "batching": {"max_batch_size": 32, "max_latency_ms": 2},
    }
    assert pipeline.samples == ({"inputs": {"features": [[5.1, 3.5, 1.4, 0.2]]}, "expect": {"label": ["setosa"]}},)
    assert pipeline.document["steps"][1]["name"] == "labels"
    assert json.loads(json.dumps(pipeline.document)) == pipeline.document  # plain data


def test_json_pipeline_loads_the_same(write_spec: WriteSpec, tmp_path: Path) -> None:
    from_yaml = load_pipeline(write_spec())
    import yaml

    data = yaml.safe_load(IRIS)
    from_json = load_pipeline(write_spec(json.dumps(data, indent=2), name="pipeline.json"))
    assert from_json.steps == from_yaml.steps
    assert from_json.inputs == from_yaml.inputs
    assert from_json.document == from_yaml.document


def test_sha256_is_computed_when_not_given(write_spec: WriteSpec) -> None:
    pipeline = load_pipeline(write_spec(mutate(f'    sha256: "{MODEL_SHA}"\n', "")))
    assert pipeline.steps[0].sha256 == MODEL_SHA


def test_sha256_is_compared_case_insensitively(write_spec: WriteSpec) -> None:
    pipeline = load_pipeline(write_spec(mutate(MODEL_SHA, MODEL_SHA.upper())))
    assert pipeline.steps[0].sha256 == MODEL_SHA


@pytest.mark.parametrize(
    "serve, expected",
    [
        ("", {"http": {"port": 8080}}),
        ("serve: {}\n", {"http": {"port": 8080}}),
        ("serve:\n  batching: {max_batch_size: 4}\n", {"batching": {"max_batch_size": 4}, "http": {"port": 8080}}),
        ("serve:\n  grpc: {port: 9000}\n", {"grpc": {"port": 9000}}),
    ],
    ids=["absent", "empty", "batching-only", "grpc-only"],
)
def test_default_endpoint(write_spec: WriteSpec, serve: str, expected: dict[str, Any]) -> None:
    text = mutate(
        "serve:\n  http: {port: 8080}\n  grpc: {port: 8081}\n  batching: {max_batch_size: 32, max_latency_ms: 2}\n",
        serve,
    )
    assert load_pipeline(write_spec(text)).serve == expected


def test_relative_path_is_reported_as_given(
    write_spec: WriteSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(mutate("name: iris", "name: Iris"))
    monkeypatch.chdir(tmp_path)
    error = problems_of(Path("pipeline.yaml"))
    assert error.render().splitlines()[1].strip().startswith("pipeline.yaml:2:7: $.name:")
    pipeline_ok = write_spec()
    assert load_pipeline(Path("pipeline.yaml")).path == pipeline_ok


# ------------------------------------------------------------- one mistake at a time

# One folder per kind of mistake: bad_specs/NAME/pipeline.yaml (DESIGN.md's
# iris example with that one mistake) and expected.json (where the problem is
# reported and the phrases its message holds). The dummy model is written
# beside each copy, so sha256 checks see MODEL_BYTES.
BAD_SPECS = Path(__file__).resolve().parent / "bad_specs"
MISTAKES = sorted(p.name for p in BAD_SPECS.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", MISTAKES)
def test_mistake_is_located_and_explained(write_spec: WriteSpec, case: str) -> None:
    expected = json.loads((BAD_SPECS / case / "expected.json").read_text(encoding="utf-8"))
    path, phrases = expected["path"], expected["phrases"]
    line, column = expected["line"], expected["column"]
    spec = write_spec((BAD_SPECS / case / "pipeline.yaml").read_text(encoding="utf-8"))
    error = problems_of(spec)
    rendered = error.render()
    matching = [p for p in error.problems if p.path == path and all(ph in p.message for ph in phrases)]
    assert matching, f"no problem at {path} with {phrases} in:\n{rendered}"
    problem = matching[0]
    assert (problem.line, problem.column) == (line, column), rendered
    assert problem.file == str(spec)
    assert f"{spec}:{line}:{column}: {path}: " in rendered
    assert f"{spec}: invalid pipeline" in error.message


def test_every_kind_of_mistake_has_its_folder() -> None:
    assert len(MISTAKES) >= 40
    for case in MISTAKES:
        assert {p.name for p in (BAD_SPECS / case).iterdir()} == {"pipeline.yaml", "expected.json"}, case
        assert (BAD_SPECS / case / "pipeline.yaml").read_text() != IRIS, f"{case} holds no mistake"


def test_problems_are_not_repeated(write_spec: WriteSpec) -> None:
    error = problems_of(write_spec(mutate("type: onnx", "type: onxx")))
    assert len(error.problems) == len(set(error.problems)) == 1
