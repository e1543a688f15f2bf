"""Graph pipelines at validate time: branches are checked like top-level
steps, every branch must set the same variables, and what branches use is
planned, locked and packed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline, walk_steps
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import load_spin
from kbuild.runtime.contract.runtime_files import files_for
from tests.helpers.build import EXAMPLES, copy_example
from tests.helpers.text import replace_once


@pytest.fixture
def wine(tmp_path: Path) -> Path:
    return copy_example("wine-graph", tmp_path) / "pipeline.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as refused:
        load_pipeline(path)
    return [p.render() for p in refused.value.problems]


def edit(path: Path, old: str, new: str) -> Path:
    path.write_text(replace_once(path.read_text(), old, new))
    return path


def test_the_example_loads_with_its_branches(wine: Path) -> None:
    pipeline = load_pipeline(wine)
    route = next(s for s in pipeline.steps if s.name == "route")
    assert [label for label, _ in route.branches] == ["cases.eu", "cases.us", "default"]
    assert route.writes == ("names", "probability")
    assert [s.name for s in walk_steps(pipeline.steps)] == [
        "lr",
        "gb",
        "avg",
        "route",
        "eu-labels",
        "us-labels",
        "other-labels",
        "canary",
        "keep",
        "shout",
    ]
    canary = next(s for s in pipeline.steps if s.name == "canary")
    assert canary.reads == ("customer",) and canary.writes == ("cultivar", "variant")
    keep = next(s for s in walk_steps(pipeline.steps) if s.name == "keep")
    assert keep.code == wine.parent / "relabel.py"


def test_a_branch_that_sets_other_variables_is_reported_at_its_line(wine: Path) -> None:
    edit(
        wine,
        "outputs: {label: names, probability: probability}}]\n    default:",
        "outputs: {label: names}}]\n    default:",
    )
    found = problems(wine)
    assert any(
        ":26:7: $.steps[3].cases.us: branch 'us' of step 'route' does not set 'probability', unlike branch 'eu'" in p
        for p in found
    ), found


def test_step_names_are_unique_in_branches_too(wine: Path) -> None:
    edit(wine, "{name: us-labels,", "{name: lr,")
    [problem] = problems(wine)
    assert "$.steps[3].cases.us[0].name: duplicate step name 'lr': steps[0] (line 18) has it already" in problem


def test_a_branch_reads_only_what_exists_before_it(wine: Path) -> None:
    edit(wine, "{name: eu-labels, type: classify, input: p,", "{name: eu-labels, type: classify, input: prob,")
    [problem] = problems(wine)
    assert (
        ":25:53: $.steps[3].cases.eu[0].input: unknown variable 'prob'; variables available here: customer, features, p, p1, p2, region"
        in problem
    )


def test_files_in_branches_are_checked(wine: Path) -> None:
    edit(wine, 'function: "relabel:shout", code: relabel.py', 'function: "relabel:shout", code: nope.py')
    [problem] = problems(wine)
    assert "$.steps[4].branches.canary[0].code: code not found: 'nope.py'" in problem


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "weights: {stable: 90, canary: 10}",
            "weights: {stable: 90, canry: 10}",
            "branch 'canary' has no weight in weights",
        ),
        ("weights: [0.7, 0.3]", "weights: [0.7, 0.2, 0.1]", "3 weights for 2 inputs"),
        (
            "method: weighted_mean, weights: [0.7, 0.3]",
            "method: mean, weights: [0.7, 0.3]",
            "weights apply to method weighted_mean only",
        ),
        ("method: weighted_mean, weights: [0.7, 0.3]", "method: weighted_mean", "missing required field 'weights'"),
        ("type: switch\n    input: region", "type: switch\n    input: [region]", "$.steps[3].input"),
    ],
)
def test_graph_fields_are_checked(wine: Path, old: str, new: str, expected: str) -> None:
    assert any(expected in p for p in problems(edit(wine, old, new)))


def test_the_plan_and_the_artifact_hold_what_the_branches_use(wine: Path) -> None:
    plan = make_plan(load_pipeline(wine), load_spin("cpu-linux-x86_64"))
    assert set(plan.step_types) == {"onnx", "lightgbm", "ensemble", "switch", "split", "classify", "python"}
    assert any(r.startswith("lightgbm") for r in plan.requirements) and any(
        r.startswith("onnxruntime") for r in plan.requirements
    )
    files = files_for(plan.step_types)
    assert "kbuild/runtime/steps/split.py" in files and "kbuild/runtime/routing.py" in files
    assert (EXAMPLES / "wine-graph" / "models" / "wine.onnx").is_file()


def test_ensemble_inputs_of_declared_types_must_agree(wine: Path) -> None:
    text = wine.read_text()
    text = replace_once(
        text,
        "  region: {datatype: BYTES, shape: [-1]}\n",
        "  region: {datatype: BYTES, shape: [-1]}\n  extra: {datatype: FP64, shape: [-1, 13]}\n",
    )
    text = replace_once(
        text, "inputs: [p1, p2], method: weighted_mean", "inputs: [features, extra], method: weighted_mean"
    )
    wine.write_text(text)
    assert any("input 'extra' is FP64 [-1, 13] but 'features' is FP32 [-1, 13]" in p for p in problems(wine))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "us: [{name: us-labels, type: classify, input: p,",
            "us: [{name: us-labels, type: classify, input: p, top_k: 2,",
            "case 'us' sets 'names' as BYTES [-1, 2] but case 'eu' sets it as BYTES [-1]",
        ),
        (
            "default: [{name: other-labels, type: classify, input: p, labels: [class_0, class_1, class_2], "
            "outputs: {label: names, probability: probability}}]",
            "default: [{name: other-labels, type: classify, input: p, labels: [class_0, class_1, class_2], "
            "outputs: {probability: probability}}, {name: flag, type: threshold, input: probability, output: names}]",
            "the default sets 'names' as BOOL but case 'eu' sets it as BYTES [-1]",
        ),
    ],
    ids=["shape", "datatype"],
)
def test_branches_giving_one_variable_two_types_are_refused_at_the_line(
    wine: Path, old: str, new: str, expected: str
) -> None:
    found = problems(edit(wine, old, new))
    marker = "name: flag" if "flag" in new else "name: us-labels"
    line = next(n for n, text in enumerate(wine.read_text().splitlines(), 1) if marker in text)
    assert any(expected in p and f"pipeline.yaml:{line}:" in p for p in found), found


def test_branches_whose_types_agree_or_are_unknown_pass(wine: Path) -> None:
    # a python step's output is typed when it runs: the split's branches are not refused
    load_pipeline(
        edit(
            wine,
            "us: [{name: us-labels, type: classify, input: p,",
            "us: [{name: us-labels, type: classify, input: p, top_k: 1,",
        )
    )
