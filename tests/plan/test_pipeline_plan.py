"""The plan: backends per step, requirements per endpoint, version pins from models."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import SpinError
from kbuild.load.pipeline import load_pipeline
from kbuild.plan.model_info import sklearn_version
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import load_spin
from tests.helpers.text import replace_once


def test_plan_takes_only_what_the_steps_and_endpoints_need(iris_dir: Path) -> None:
    plan = make_plan(load_pipeline(iris_dir / "pipeline.yaml"), load_spin("cpu-linux-x86_64"))
    assert plan.requirements == ("numpy>=1.26", "onnxruntime>=1.20")
    assert plan.endpoints == ("http",)
    assert [p.runtime_module for p in plan.steps] == ["kbuild.runtime.steps.onnx", "kbuild.runtime.steps.classify"]


def test_grpc_adds_its_packages(iris_dir: Path) -> None:
    path = iris_dir / "pipeline.yaml"
    path.write_text(
        replace_once(path.read_text(), "  http: {port: 8080}", "  http: {port: 8080}\n  grpc: {port: 8081}")
    )
    plan = make_plan(load_pipeline(path), load_spin("cpu-linux-x86_64"))
    assert plan.endpoints == ("http", "grpc")
    assert any(r.startswith("grpcio") for r in plan.requirements)


def test_sklearn_is_pinned_to_the_models_version(iris_dir: Path) -> None:
    import sklearn

    assert sklearn_version(iris_dir / "models" / "iris.joblib") == sklearn.__version__
    assert sklearn_version(iris_dir / "models" / "iris.onnx") is None
    plan = make_plan(load_pipeline(iris_dir / "sklearn.yaml"), load_spin("cpu-linux-x86_64"))
    assert f"scikit-learn=={sklearn.__version__}" in plan.requirements
    assert not any(r.startswith("scikit-learn>=") for r in plan.requirements)


def test_unsupported_step_names_spin_and_step(iris_dir: Path, tmp_path: Path) -> None:
    custom = tmp_path / "no-onnx.yaml"
    custom.write_text("kbuild-spin: 1\nname: no-onnx\nextends: cpu-linux-x86_64\nbackends:\n  onnx: null\n")
    with pytest.raises(SpinError) as info:
        make_plan(load_pipeline(iris_dir / "pipeline.yaml"), load_spin(str(custom)))
    text = info.value.render()
    assert "no-onnx" in text and "step 'model'" in text and "'onnx'" in text
    assert info.value.exit_code == 3


def test_aurora_warns_that_onnx_runs_on_the_vector_host(iris_dir: Path) -> None:
    plan = make_plan(load_pipeline(iris_dir / "pipeline.yaml"), load_spin("aurora-linux"))
    assert len(plan.warnings) == 1 and "vector host" in plan.warnings[0]
