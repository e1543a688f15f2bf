"""The model runtimes' thread count: KBUILD_THREADS, else the cgroup's CPU
quota and the affinity mask, whichever is smaller; and the pools the steps
size from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import ArtifactUsageError
from kbuild.runtime.steps import StepContext
from kbuild.runtime.threads import cgroup_quota, cpu_budget, pool_environment
from tests.helpers.build import EXAMPLES


def test_the_environment_wins_then_the_smaller_of_quota_and_affinity() -> None:
    assert cpu_budget({"KBUILD_THREADS": "3"}, quota=1.0, allowed=8) == 3
    assert cpu_budget({}, quota=1.5, allowed=8) == 2  # 150 ms per 100 ms: two threads, rounded up
    assert cpu_budget({}, quota=0.25, allowed=8) == 1
    assert cpu_budget({}, quota=None, allowed=6) == 6
    assert cpu_budget({}, quota=16.0, allowed=4) == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(ArtifactUsageError, match="KBUILD_THREADS must be an integer >= 1"):
            cpu_budget({"KBUILD_THREADS": bad}, quota=None, allowed=2)


def test_cgroup_v2_and_v1_quotas(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None
    assert cgroup_quota(tmp_path / "absent") is None


def test_onnx_sessions_get_the_thread_count(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from kbuild.runtime.steps.onnx import _session

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    session = _session(str(path), {}, 3)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # the spin's session_options still have the last word
    assert (
        _session(str(path), {"session_options": {"intra_op_num_threads": 1}}, 3)
        .get_session_options()
        .intra_op_num_threads
        == 1
    )
    assert _session(str(path), {}, None).get_session_options().intra_op_num_threads == 0  # the library's default
    run = session.run(["y"], {"x": np.array([-1.0, 2.0], dtype=np.float32)})[0]
    assert run.tolist() == [0.0, 2.0]


def test_step_context_carries_the_count(tmp_path: Path) -> None:
    assert StepContext("s", tmp_path).threads is None
    assert StepContext("s", tmp_path, threads=2).threads == 2


def test_openmp_and_blas_variables_are_set_only_where_the_process_left_them() -> None:
    assert pool_environment({}, 3) == {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    assert pool_environment({"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": " "}, 2) == {
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
    }


def test_xgboost_boosters_get_the_thread_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import xgboost as xgb

    from kbuild.runtime.steps import xgboost

    given: list[dict[str, Any]] = []
    real = xgb.Booster.set_param

    def recording(self: xgb.Booster, params: Any, value: Any = None) -> None:
        given.append(dict(params) if isinstance(params, dict) else {str(params): value})
        real(self, params, value)

    monkeypatch.setattr(xgb.Booster, "set_param", recording)
    step = {"name": "s", "type": "xgboost", "model": "cancer.json", "input": "x", "output": "y"}
    app = EXAMPLES / "xgboost" / "models"
    xgboost.build(step, StepContext("s", app, threads=3))
    assert {"nthread": 3} in given
    given.clear()
    xgboost.build(step, StepContext("s", app))
    assert not any("nthread" in p for p in given)  # no budget: the library's default


def test_lightgbm_predicts_with_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightgbm as lgb

    from kbuild.runtime.steps import lightgbm

    calls: list[dict[str, object]] = []
    real = lgb.Booster.predict

    def recording(self: lgb.Booster, data: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(self, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lgb.Booster, "predict", recording)
    step = {"name": "s", "type": "lightgbm", "model": "wine.txt", "input": "x", "output": "y"}
    run = lightgbm.build(step, StepContext("s", EXAMPLES / "lightgbm" / "models", threads=2))
    run({"x": np.zeros((3, 13), dtype=np.float32)})
    assert calls[-1].get("num_threads") == 2


SKLEARN_POOLS = """
import json, sys
from pathlib import Path
from threadpoolctl import threadpool_info
from kbuild.runtime.steps import StepContext, sklearn
app = Path(sys.argv[1])
sklearn.build({"name": "s", "type": "sklearn", "model": "forest.joblib", "input": "x", "output": "y"},
              StepContext("s", app, threads=int(sys.argv[2])))
print(json.dumps(sorted({p["num_threads"] for p in threadpool_info()})))
"""


def test_sklearn_estimators_and_their_pools_get_the_thread_count(tmp_path: Path) -> None:
    import subprocess
    import sys

    import joblib
    from sklearn.ensemble import RandomForestClassifier

    from kbuild.runtime.steps.sklearn import _size_pools

    forest = RandomForestClassifier(n_estimators=3, n_jobs=-1).fit(np.eye(4), [0, 1, 0, 1])
    _size_pools(forest, 2)
    assert forest.n_jobs == 2  # -1 would be every core of the node
    joblib.dump(forest, tmp_path / "forest.joblib")
    # the OpenMP and BLAS pools are process-wide: measured in a process of its own
    proc = subprocess.run(
        [sys.executable, "-c", SKLEARN_POOLS, str(tmp_path), "1"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [1]
