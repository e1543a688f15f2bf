"""An artifact holds only the runtime modules its pipeline needs
(kbuild.runtime.contract.runtime_files.files_for) and runs from ROOT/site alone: no compiler
modules, no step modules of other types, no model libraries it does not use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kbuild.runtime.contract.runtime_files import CORE, files_for
from tests.helpers.runtime import (
    GUARD_CODE,
    REPO,
    SETOSA,
    TIMEOUT_S,
    Server,
    guarded_iris_pipeline,
    write_root,
)

# Runs the CLI in-process and reports what got imported.
PROBE = """
import json, sys
from kbuild.runtime.cli import main
code = main(sys.argv[1:])
mods = sorted(m for m in sys.modules if m == "kbuild" or m.startswith("kbuild."))
files = {m: getattr(sys.modules[m], "__file__", None) for m in mods}
libs = [m for m in ("onnxruntime", "sklearn", "joblib") if m in sys.modules]
print(json.dumps({"code": code, "modules": files, "libs": libs}), file=sys.stderr)
"""


def ship(root: Path, step_types: list[str]) -> Path:
    site = root / "site"
    for rel in files_for(step_types):
        dest = site / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, dest)
    return site


def probe(root: Path, site: Path, *args: str, stdin: str = "") -> tuple[dict[str, Any], str]:
    # cwd=root and PYTHONPATH=site: the repository is not importable.
    run = subprocess.run(
        [sys.executable, "-c", PROBE, "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=TIMEOUT_S,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
    )
    *messages, report = run.stderr.strip().splitlines()
    result = json.loads(report)
    assert result["code"] == 0, "\n".join(messages)
    for name, file in result["modules"].items():
        assert file is None or file.startswith(str(site)), (name, file)
    return result, run.stdout


def test_every_core_module_exists() -> None:
    for rel in CORE:
        assert (REPO / rel).is_file(), rel
    for transport in ("http", "grpc"):
        for rel in files_for([], [transport]):
            assert (REPO / rel).is_file(), rel
    assert files_for(["onnx"], ["http"]) == sorted(
        {
            *CORE,
            "kbuild/runtime/steps/onnx.py",
            "kbuild/runtime/oip.py",
            "kbuild/runtime/openai_api.py",
            "kbuild/runtime/openapi.py",
            "kbuild/runtime/transports/wire.py",
            "kbuild/runtime/transports/http.py",
            "kbuild/runtime/transports/http_api.py",
        }
    )
    # gRPC modules only where the pipeline serves gRPC
    assert not any("grpc" in rel or "proto" in rel for rel in files_for(["onnx"], ["http"]))


def test_a_numpy_only_pipeline_imports_no_model_library(tmp_path: Path) -> None:
    pipeline = {
        "kbuild": 1,
        "name": "spam",
        "inputs": {
            "length": {"datatype": "FP32", "shape": [-1]},
            "links": {"datatype": "INT32", "shape": [-1]},
        },
        "outputs": {"verdict": {"datatype": "BYTES", "shape": [-1]}},
        "steps": [
            {"name": "record", "type": "fields", "fields": ["length", "links"], "output": "x"},
            {
                "name": "norm",
                "type": "scale",
                "input": "x",
                "output": "z",
                "mean": [100, 2],
                "std": [50, 1],
            },
            {"name": "sum", "type": "python", "function": "rt_sum:make", "code": "rt_sum.py"},
            {
                "name": "cut",
                "type": "threshold",
                "input": "score",
                "output": "verdict",
                "threshold": 1,
                "labels": ["ham", "spam"],
            },
        ],
    }
    source = "def make(config):\n    return lambda v: {'score': v['z'].sum(axis=1)}\n"
    root = write_root(tmp_path / "root", pipeline, code={"sum": {"rt_sum.py": source}})
    site = ship(root, ["fields", "scale", "python", "threshold"])
    result, out = probe(root, site, "predict", stdin=json.dumps({"length": [100, 300], "links": [1, 5]}))
    assert json.loads(out) == {"verdict": ["ham", "spam"]}
    assert result["libs"] == []
    steps = sorted(m for m in result["modules"] if m.startswith("kbuild.runtime.steps."))
    assert steps == [
        "kbuild.runtime.steps.fields",
        "kbuild.runtime.steps.python",
        "kbuild.runtime.steps.scale",
        "kbuild.runtime.steps.threshold",
    ]
    assert all(m == "kbuild" or m.startswith("kbuild.runtime") for m in result["modules"])


def test_the_iris_artifact_runs_and_serves_from_its_site(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_root(
        tmp_path / "root",
        guarded_iris_pipeline(),
        models={"model": models["onnx"]},
        code={"guard": {"rt_guard.py": GUARD_CODE}},
        samples=[{"inputs": {"features": [SETOSA]}, "expect": {"label": ["setosa"]}, "outputs": None}],
    )
    site = ship(root, ["python", "onnx", "classify"])
    result, out = probe(root, site, "check")
    assert out.splitlines()[-1] == "1 samples: 1 passed, 0 failed"
    assert result["libs"] == ["onnxruntime"]

    srv = Server(root, "--http-port", "0", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}, cwd=root).started()
    try:
        srv.wait_event("ready")
        conn = srv.connect()
        conn.request("POST", "/predict", body=json.dumps({"features": SETOSA}))
        assert json.loads(conn.getresponse().read())["label"] == ["setosa"]
    finally:
        assert srv.terminate() == 0
