"""The zipapp target end to end: build, serve over HTTP, predict, check,
reproducible bytes, concurrent first starts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.build import (
    EXAMPLES,
    Built,
    build_example,
    free_port,
    kbuild,
    post_json,
    wait_ready,
)
from tests.helpers.runtime import sha256
from tests.helpers.text import replace_once

LABELS = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]]


def onnx_answer(rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    """What the example's ONNX model itself says."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(EXAMPLES / "iris" / "models" / "iris.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"float_input": np.array(rows, dtype=np.float32)})[0]
    return [LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def run_artifact(
    artifact: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(artifact), *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


def test_build_report_describes_the_artifact(iris_onnx: Built) -> None:
    report = iris_onnx.report
    assert report["spin"]["name"] == "cpu-linux-x86_64"
    assert report["target"] == "zipapp"
    assert report["artifact"]["sha256"] == hashlib.sha256(iris_onnx.artifact.read_bytes()).hexdigest()
    assert {p["name"] for p in report["packages"]} >= {"numpy", "onnxruntime"}
    assert (
        report["models"][0]["sha256"] == hashlib.sha256((EXAMPLES / "iris/models/iris.onnx").read_bytes()).hexdigest()
    )
    assert report["verification"]["status"] == "passed"
    assert set(report["timings_s"]) >= {"load+validate", "plan", "lock", "fetch", "render", "package", "verify"}
    assert iris_onnx.artifact.name == "iris-1.0.0-cpu-linux-x86_64.pyz"


def test_artifact_carries_only_what_the_pipeline_uses(iris_onnx: Built) -> None:
    with zipfile.ZipFile(iris_onnx.artifact) as zf:
        names = zf.namelist()
    steps = {n.rsplit("/", 1)[1] for n in names if n.startswith("site/kbuild/runtime/steps/")}
    assert steps == {"__init__.py", "onnx.py", "classify.py"}
    wheels = " ".join(n for n in names if n.startswith("wheels/"))
    assert "onnxruntime" in wheels and "scikit_learn" not in wheels and "scipy" not in wheels
    assert not any("bootstrap" in n for n in names if n.startswith("site/"))


def test_predict_gives_the_models_own_answers(iris_onnx: Built) -> None:
    proc = run_artifact(iris_onnx.artifact, "predict", stdin=json.dumps({"features": ROWS}))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    labels, probs = onnx_answer(ROWS)
    assert out["label"] == labels
    np.testing.assert_allclose(out["probability"], probs, rtol=1e-6)


def test_predict_reads_a_file_and_reports_bad_input_without_traceback(iris_onnx: Built, tmp_path: Path) -> None:
    good = tmp_path / "in.json"
    good.write_text(json.dumps({"features": ROWS[:1]}))
    assert json.loads(run_artifact(iris_onnx.artifact, "predict", str(good)).stdout)["label"] == ["setosa"]
    bad = run_artifact(iris_onnx.artifact, "predict", stdin=json.dumps({"features": [[1.0, 2.0]]}))
    assert bad.returncode != 0
    assert "features" in bad.stderr and "Traceback" not in bad.stderr


def test_check_passes_and_info_prints_the_report(iris_onnx: Built) -> None:
    check = run_artifact(iris_onnx.artifact, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 passed" in check.stdout + check.stderr
    info = json.loads(run_artifact(iris_onnx.artifact, "info").stdout)
    assert info["pipeline"]["name"] == "iris" and info["spin"]["name"] == "cpu-linux-x86_64"


def test_the_sbom_is_inside_and_beside_and_lists_what_runs(iris_onnx: Built) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    beside = iris_onnx.artifact.with_name(iris_onnx.artifact.name.replace(".pyz", ".cdx.json"))
    assert iris_onnx.report["sbom"]["path"] == str(beside.resolve())
    inside = run_artifact(iris_onnx.artifact, "info", "--sbom")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == beside.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(inside.stdout) is None
    sbom = json.loads(inside.stdout)
    hashes = {c["name"]: c["hashes"][0]["content"] for c in sbom["components"]}
    assert {p["name"]: p["sha256"] for p in iris_onnx.report["packages"]}.items() <= hashes.items()
    assert hashes["model/iris.onnx"] == iris_onnx.report["models"][0]["sha256"]
    assert not [c for c in sbom["components"] if c["type"] == "container"]  # a zipapp has no base image
    assert sbom["metadata"]["component"]["name"] == "iris"


def test_serves_predict_and_health_over_http(iris_onnx: Built) -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, str(iris_onnx.artifact), "serve", "--http-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            wait_ready(port, proc)
            status, body = post_json(port, "/predict", {"features": ROWS})
            assert status == 200
            labels, probs = onnx_answer(ROWS)
            assert body["label"] == labels
            np.testing.assert_allclose(body["probability"], probs, rtol=1e-6)
            for bad in (b"{not json", {"features": [[1, 2, 3]]}, {}, {"features": [["a", "b", "c", "d"]]}):
                status, body = post_json(port, "/predict", bad)
                assert 400 <= status < 500 and isinstance(body.get("error"), str)
            status, _ = post_json(port, "/predict", {"features": ROWS[:1]})
            assert status == 200  # still serving after bad requests
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


def test_port_comes_from_the_environment(iris_onnx: Built) -> None:
    port = free_port()
    env = {**os.environ, "KBUILD_HTTP_PORT": str(port)}
    with subprocess.Popen(
        [sys.executable, str(iris_onnx.artifact)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        try:
            wait_ready(port, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


def test_sklearn_and_python_steps(iris_sklearn: Built) -> None:
    import joblib

    model = joblib.load(EXAMPLES / "iris/models/iris.joblib")
    probs = model.predict_proba(np.array(ROWS, dtype=np.float32))
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / 2.0  # the example's temper step, temperature 2
    tempered = np.exp(logits - logits.max(axis=1, keepdims=True))
    tempered /= tempered.sum(axis=1, keepdims=True)
    out = json.loads(run_artifact(iris_sklearn.artifact, "predict", stdin=json.dumps({"features": ROWS})).stdout)
    assert out["label"] == [LABELS[i] for i in tempered.argmax(axis=1)]
    np.testing.assert_allclose(out["probability"], tempered.max(axis=1), rtol=1e-5)
    pins = {p["name"]: p["version"] for p in iris_sklearn.report["packages"]}
    import sklearn

    assert pins["scikit-learn"] == sklearn.__version__  # pinned to the version that saved the model


def test_rebuild_gives_identical_bytes(iris_onnx: Built, tmp_path: Path) -> None:
    again = build_example(tmp_path, "pipeline.yaml")
    # digests: a byte diff would be unreadable
    assert sha256(again.artifact) == sha256(iris_onnx.artifact)


def test_four_processes_start_a_fresh_artifact_at_once(iris_onnx: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "KBUILD_APP_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(iris_onnx.artifact), "predict"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(json.dumps({"features": ROWS}).encode(), timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1] for o in outputs]
    answers = {o[0] for o in outputs}
    assert len(answers) == 1
    assert json.loads(answers.pop())["label"] == onnx_answer(ROWS)[0]
    entries = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 1 and entries[0].startswith("iris-")  # one unpacked tree, no temporary leftovers


def test_wrong_python_is_refused_clearly(iris_onnx: Built, tmp_path: Path) -> None:
    with zipfile.ZipFile(iris_onnx.artifact) as zf:
        meta = json.loads(zf.read("kbuild-app.json"))
    assert meta["python"] == "3.11" and meta["arch"] == "x86_64"
    forged = tmp_path / "forged.pyz"
    with zipfile.ZipFile(iris_onnx.artifact) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "kbuild-app.json":
                data = json.dumps({**meta, "python": "3.99"}).encode()
            dst.writestr(item, data)
    proc = run_artifact(forged, "info")
    assert proc.returncode != 0
    assert "Python 3.99" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("expect, code", [({"label": ["virginica"]}, 6)])
def test_a_wrong_expectation_fails_the_build(
    iris_dir: Path, tmp_path: Path, expect: dict[str, list[str]], code: int
) -> None:
    spec = replace_once(
        (iris_dir / "pipeline.yaml").read_text(), "expect: {label: [setosa]}", f"expect: {json.dumps(expect)}"
    )
    (iris_dir / "pipeline.yaml").write_text(spec)
    proc = kbuild("--spin", "cpu-linux-x86_64", "-o", tmp_path / "out", iris_dir / "pipeline.yaml")
    assert proc.returncode == code, proc.stderr
    assert "check" in proc.stderr and "setosa" in proc.stderr and "Traceback" not in proc.stderr


def test_the_artifact_runs_its_own_runtime_where_kbuild_is_installed(iris_onnx: Built, tmp_path: Path) -> None:
    """This Python has kbuild installed (the tests run from it); the artifact
    must import the runtime it carries, not that one."""
    env = {**os.environ, "KBUILD_APP_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-v", str(iris_onnx.artifact), "info"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = [
        line.rsplit(" ", 1)[-1]
        for line in proc.stderr.splitlines()
        if line.startswith("# code object from") and "kbuild/" in line
    ]
    assert loaded and all(path.startswith(str(tmp_path)) for path in loaded), loaded
