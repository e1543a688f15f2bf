"""The step type x spin matrix: every cell runs somewhere definite or is refused
with its reason; foreign platforms (aarch64, Python 3.12, the NEC vector
host) lock and fetch the target's wheels; extra indexes never hang a lock."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.cli import main
from kbuild.errors import SpinError
from kbuild.load.pipeline import MODEL_STEP_TYPES, STEP_TYPES, load_pipeline
from kbuild.plan.model_info import mlflow_requirements
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import available_spins, load_spin, step_matrix
from kbuild.resolve.indexes import probe
from kbuild.resolve.lock import read_lock
from kbuild.runtime.contract.step_types import CATALOGUE as STEP_KINDS
from kbuild.verify.report import embedded_report
from tests.helpers.build import EXAMPLES, REPO, SHIPPED_SPINS, copy_example, elf_machines, kbuild
from tests.helpers.text import replace_once

PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the matrix ------------------------------------------------------------------------------


def test_every_step_type_has_a_runtime_and_a_cell_on_every_spin() -> None:
    assert set(STEP_KINDS) >= set(STEP_TYPES)
    assert all((REPO / kind.file).is_file() for kind in STEP_KINDS.values())
    assert set(SHIPPED_SPINS) <= set(available_spins())
    for name in SHIPPED_SPINS:
        spin = load_spin(name)
        for row in step_matrix(spin, STEP_TYPES):
            backend = spin.backends.get(row.step_type)
            assert backend is not None, f"{name}: no backend entry for {row.step_type}"
            if row.supported:
                assert row.device in ("cpu", "cuda", "openvino", "ve"), (name, row)
            else:
                assert backend.unsupported and len(backend.unsupported) > 20, (name, row)


def test_cuda_spins_use_gpu_builds_of_the_right_cuda_major() -> None:
    cuda12, cuda13 = load_spin("cuda12-linux-x86_64"), load_spin("cuda13-linux-x86_64")
    for spin, onnx, torch in ((cuda12, "<1.27", "<2.11"), (cuda13, ">=1.27", ">=2.11")):
        assert any(r.startswith("onnxruntime-gpu") and onnx in r for r in spin.backends["onnx"].requirements)
        assert spin.backends["onnx"].options["providers"][0] == "CUDAExecutionProvider"
        ts = spin.backends["torchscript"]
        assert ts.device == "cuda" and ts.options == {"device": "cuda"} and not ts.index_urls
        assert len(ts.requirements) == 1 and ts.requirements[0].startswith("torch") and torch in ts.requirements[0]
        assert "+cpu" not in ts.requirements[0]
        assert spin.backends["xgboost"].requirements[0].startswith("xgboost>=")  # the CUDA-capable wheel
        assert spin.backends["xgboost"].device == "cuda"
        assert spin.backends["lightgbm"].device == "cpu" and "no CUDA" in (spin.backends["lightgbm"].note or "")
        for framework in ("keras", "tensorflow"):  # TensorFlow's CUDA 12 build; a CUDA 13 driver runs it
            backend = spin.backends[framework]
            assert backend.device == "cuda" and backend.requirements[0].startswith("tensorflow[and-cuda]")


def test_cpu_spins_take_the_cpu_builds() -> None:
    for name in ("cpu-linux-x86_64", "cpu-linux-aarch64", "openvino-linux-x86_64"):
        spin = load_spin(name)
        ts = spin.backends["torchscript"]
        assert ts.requirements == ("torch==2.13.0+cpu",) and ts.index_urls == (PYTORCH_CPU_INDEX,)
        assert spin.backends["xgboost"].requirements == ("xgboost-cpu>=2.1",)
        # tensorflow-cpu has x86-64 wheels only; TensorFlow's aarch64 wheels are CPU builds
        tensorflow = "tensorflow>=2.18" if "aarch64" in name else "tensorflow-cpu>=2.18"
        assert spin.backends["keras"].requirements[0] == spin.backends["tensorflow"].requirements[0] == tensorflow
    openvino = load_spin("openvino-linux-x86_64").backends["onnx"]
    assert openvino.requirements[0].startswith("onnxruntime-openvino") and openvino.device == "openvino"
    assert openvino.options["providers"][0] == "OpenVINOExecutionProvider"


def test_aurora_runs_torchscript_on_the_ve_and_warns_for_the_rest(tmp_path: Path) -> None:
    aurora = load_spin("aurora-linux")
    for on_ve in ("torchscript", "torch"):  # torch: a native .pt2 program
        ts = aurora.backends[on_ve]
        assert ts.device == "ve" and ts.options == {"device": "ve"}
        assert set(ts.requirements) == {"torch==2.13.0+cpu", "veda-pytorch>=14"}
    for step_type in MODEL_STEP_TYPES - {"torchscript", "torch"}:
        backend = aurora.backends[step_type]
        assert backend.device == "cpu" and "vector host's CPU" in (backend.warning or ""), step_type
    for step_type in STEP_TYPES - MODEL_STEP_TYPES:
        assert not aurora.backends[step_type].warning, step_type

    plan = make_plan(load_pipeline(EXAMPLES / "torchscript/pipeline.yaml"), aurora)
    assert not plan.warnings and plan.index_urls == (PYTORCH_CPU_INDEX,)
    assert [p.backend.device for p in plan.steps] == ["ve", "cpu"]
    plan = make_plan(load_pipeline(EXAMPLES / "lightgbm/pipeline.yaml"), aurora)
    assert len(plan.warnings) == 1 and "step 'model' (lightgbm) on aurora-linux" in plan.warnings[0]
    report = embedded_report(plan, read_lock(EXAMPLES / "lightgbm/wine-lightgbm.cpu-linux-x86_64.lock"), [], "zipapp")
    assert report["warnings"] == list(plan.warnings)
    assert report["steps"][0] == {
        "name": "model",
        "type": "lightgbm",
        "device": "cpu",
        "warning": aurora.backends["lightgbm"].warning,
    }


def test_aurora_pipelines_on_the_vector_hosts_cpu_are_recorded_and_checked_here(iris_dir: Path, tmp_path: Path) -> None:
    """Every iris step runs on the vector host's CPU (x86-64): the build runs the
    samples and the check here, and its report says no step used the VE."""
    proc = kbuild("--spin", "aurora-linux", "-o", tmp_path, iris_dir / "pipeline.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "running the samples at build time" in proc.stderr
    report = json.loads((tmp_path / "build-report.json").read_text())
    assert report["verification"]["status"] == "passed"
    assert "no step used the ve" in report["verification"]["detail"]


def test_a_cell_that_cannot_work_exits_3_naming_spin_step_and_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "--spin", "cpu-linux-aarch64", "-o", tmp_path, EXAMPLES / "pmml/pipeline.yaml")
    assert code == 3
    assert "cpu-linux-aarch64" in err and "step 'model'" in err and "'pmml'" in err
    assert "no aarch64 wheels" in err and "Traceback" not in err
    custom = tmp_path / "no-tflite.yaml"
    custom.write_text("kbuild-spin: 1\nname: no-tflite\nextends: cpu-linux-x86_64\nbackends:\n  tflite: null\n")
    with pytest.raises(SpinError) as info:
        make_plan(load_pipeline(EXAMPLES / "tflite/pipeline.yaml"), load_spin(str(custom)))
    assert "'tflite', which spin 'no-tflite' does not support" in info.value.render()


def test_a_spin_that_extends_can_lift_an_unsupported_cell(tmp_path: Path) -> None:
    custom = tmp_path / "arm-pmml.yaml"
    custom.write_text(
        "kbuild-spin: 1\nname: arm-pmml\nextends: cpu-linux-aarch64\nbackends:\n  pmml: {unsupported: null}\n"
    )
    plan = make_plan(load_pipeline(EXAMPLES / "pmml/pipeline.yaml"), load_spin(str(custom)))
    assert "sklearn-pmml-model>=1.0" in plan.requirements


def test_spins_command_prints_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spins", "cuda12-linux-x86_64")
    assert code == 0
    rows = {
        line.split()[0]: line for line in out.splitlines() if line.startswith("    ") and line.split()[0] in STEP_TYPES
    }
    assert set(rows) == set(STEP_TYPES)
    assert "cuda" in rows["torchscript"] and "torch>=2.6,<2.11" in rows["torchscript"]
    assert "onnxruntime-gpu[cuda,cudnn]>=1.19,<1.27" in rows["onnx"]
    assert "providers: CUDAExecutionProvider, CPUExecutionProvider" in out
    code, out, _ = run(capsys, "spins", "cpu-linux-aarch64")
    assert "unsupported: sklearn-pmml-model publishes no aarch64 wheels" in out
    assert f"packages also from {PYTORCH_CPU_INDEX}" in out
    code, out, _ = run(capsys, "spins", "aurora-linux", "--json")
    matrix = {row["type"]: row for row in json.loads(out)["matrix"]}
    assert matrix["torchscript"]["device"] == "ve" and "veda-pytorch>=14" in matrix["torchscript"]["packages"]
    assert any("vector host" in note for note in matrix["xgboost"]["notes"])
    code, out, _ = run(capsys, "spins")
    arm = next(line for line in out.splitlines() if line.startswith("cpu-linux-aarch64"))
    assert "pmml" not in arm and "torchscript" in arm


# --- requirements that come from the model --------------------------------------------------


def test_an_mlflow_models_requirements_go_into_the_plan(tmp_path: Path) -> None:
    model = EXAMPLES / "mlflow/models/iris-model"
    pinned = (model / "requirements.txt").read_text().split()
    assert any(r.startswith("mlflow==") for r in pinned)
    plan = make_plan(load_pipeline(EXAMPLES / "mlflow/pipeline.yaml"), load_spin("cpu-linux-x86_64"))
    for requirement in pinned:
        if requirement.startswith("mlflow=="):
            assert requirement not in plan.requirements  # the spin's mlflow-skinny loads it
        else:
            assert requirement in plan.requirements
    assert "mlflow-skinny>=2.9,<3.18" in plan.requirements

    zipped = tmp_path / "model.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("iris-model/MLmodel", (model / "MLmodel").read_text())
        zf.writestr("iris-model/requirements.txt", "# saved by mlflow\n-c constraints.txt\nscikit-learn==1.9.1\n\n")
    assert mlflow_requirements(zipped) == ["scikit-learn==1.9.1"]
    assert mlflow_requirements(EXAMPLES / "iris/models/iris.onnx") == []


# --- foreign platforms -----------------------------------------------------------------------


def test_aurora_lock_holds_veda_pytorch_on_the_cpu_build_of_torch(tmp_path: Path) -> None:
    folder = copy_example("torchscript", tmp_path)
    committed = read_lock(folder / "digits-torchscript.aurora-linux.lock")
    (folder / "digits-torchscript.aurora-linux.lock").unlink()
    proc = kbuild("lock", "--spin", "aurora-linux", folder / "pipeline.yaml")
    assert proc.returncode == 0, proc.stderr
    path = folder / "digits-torchscript.aurora-linux.lock"
    lock = read_lock(path)
    versions = {p.name: p.version for p in lock.packages}
    assert {"veda-pytorch", "veda", "veda-tensors", "tungl", "torch", "numpy"} <= set(versions)
    assert versions["torch"] == "2.13.0+cpu"
    assert not [name for name in versions if name.startswith("nvidia-")]  # no CUDA build of torch
    text = path.read_text()
    assert "for spin 'aurora-linux'" in text.splitlines()[0] and f"# index: {PYTORCH_CPU_INDEX}" in text
    assert lock.index_urls == (PYTORCH_CPU_INDEX,)
    assert {p.name for p in committed.packages} == set(versions)  # the committed lock is this one


def test_aarch64_artifact_of_a_gradient_boosting_model_holds_only_aarch64_code(tmp_path: Path) -> None:
    folder = copy_example("lightgbm", tmp_path)
    build = kbuild("--spin", "cpu-linux-aarch64", "-o", tmp_path / "out", folder / "pipeline.yaml")
    assert build.returncode == 0, build.stderr
    # lightgbm's aarch64 wheel (with libgomp) answers its sample under QEMU
    assert "verification: verified (emulated aarch64) (1 samples: 1 passed" in build.stderr
    arm = read_lock(folder / "wine-lightgbm.cpu-linux-aarch64.lock")
    x86 = read_lock(folder / "wine-lightgbm.cpu-linux-x86_64.lock")
    assert {p.name for p in arm.packages} == {p.name for p in x86.packages}
    assert not {h for p in arm.packages for h in p.hashes if p.name == "lightgbm"} & {
        h for p in x86.packages for h in p.hashes if p.name == "lightgbm"
    }
    assert elf_machines(tmp_path / "out/wine-lightgbm-1.0.0-cpu-linux-aarch64.pyz") == {"aarch64"}


def test_a_spin_extending_another_with_python_312_locks_and_fetches_312_wheels(tmp_path: Path) -> None:
    spin_file = tmp_path / "py312.yaml"
    spin_file.write_text('kbuild-spin: 1\nname: cpu-linux-x86_64-py312\nextends: cpu-linux-x86_64\npython: "3.12"\n')
    folder = copy_example("xgboost", tmp_path)
    out = tmp_path / "out"
    build = kbuild("--spin", spin_file, "-o", out, folder / "pipeline.yaml")
    assert build.returncode == 0, build.stderr
    lock = read_lock(folder / "cancer-xgboost.cpu-linux-x86_64-py312.lock")
    versions = {p.name: p.version for p in lock.packages}
    old = {p.name: p.version for p in read_lock(folder / "cancer-xgboost.cpu-linux-x86_64.lock").packages}
    # xgboost-cpu 3.3 and later require Python 3.12: only the 3.12 lock may take them
    assert tuple(int(v) for v in old["xgboost-cpu"].split(".")[:2]) < (3, 3)
    assert tuple(int(v) for v in versions["xgboost-cpu"].split(".")[:2]) >= (3, 3)
    artifact = out / "cancer-xgboost-1.0.0-cpu-linux-x86_64-py312.pyz"
    with zipfile.ZipFile(artifact) as zf:
        wheels = [n.split("/", 1)[1] for n in zf.namelist() if n.startswith("wheels/")]
        meta = json.loads(zf.read("kbuild-app.json"))
    assert meta["python"] == "3.12"
    native = [w for w in wheels if w.startswith(("numpy-", "scipy-"))]
    assert len(native) == 2 and all("-cp312-cp312-" in w for w in native), wheels
    assert not [w for w in wheels if "cp311" in w]
    report = json.loads((out / "build-report.json").read_text())
    runnable = load_spin(str(spin_file)).host_python() is not None
    assert report["verification"]["status"] == ("passed" if runnable else "not verified")


def test_a_broken_interpreter_shim_does_not_count_as_the_spins_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = tmp_path / "python3.99"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    spin_file = tmp_path / "py399.yaml"
    spin_file.write_text('kbuild-spin: 1\nname: py399\nextends: cpu-linux-x86_64\npython: "3.99"\n')
    assert shutil.which("python3.99") == str(shim)
    assert load_spin(str(spin_file)).host_python() is None


# --- extra indexes ---------------------------------------------------------------------------


@pytest.fixture
def answering_index(tmp_path: Path) -> Iterator[str]:
    """An HTTP server that answers every request with 404: reachable, if useless."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/no/such/index"
    finally:
        server.shutdown()
        server.server_close()


def test_probe_keeps_indexes_that_answer_and_leaves_out_the_others(tmp_path: Path, answering_index: str) -> None:
    refused = "http://127.0.0.1:9/simple"  # the discard port: nothing listens
    start = time.monotonic()
    indexes = probe([answering_index, tmp_path.as_uri(), refused, (tmp_path / "missing").as_uri()])
    assert time.monotonic() - start < 10
    assert indexes.usable == (answering_index, tmp_path.as_uri())
    assert [url for url, _ in indexes.skipped] == [refused, (tmp_path / "missing").as_uri()]
    assert "unreachable" in indexes.skipped[0][1]
    assert "left out" in indexes.notes()[0] and "find-links" in indexes.notes()[0]


def test_an_unreachable_index_neither_hangs_a_lock_nor_hides_why_it_failed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    refused = "http://127.0.0.1:9/simple"
    spin_file = tmp_path / "mirror.yaml"
    spin_file.write_text(
        f"kbuild-spin: 1\nname: mirror\nextends: cpu-linux-x86_64\nindex: {{extra_urls: [{refused}]}}\n"
    )
    folder = copy_example("iris", tmp_path)
    start = time.monotonic()
    code, out, err = run(capsys, "lock", "--spin", spin_file, folder / "pipeline.yaml")
    assert code == 0, err
    assert time.monotonic() - start < 120
    assert f"# index: {refused}" in (folder / "iris.mirror.lock").read_text()

    spec = replace_once(
        (folder / "sklearn.yaml").read_text(),
        "    config: {temperature: 2.0}",
        "    config: {temperature: 2.0}\n    requirements: [kbuild-no-such-package==1.0]",
    )
    (folder / "sklearn.yaml").write_text(spec)
    code, _, err = run(capsys, "lock", "--spin", spin_file, folder / "sklearn.yaml")
    assert code == 4
    assert "kbuild-no-such-package" in err and f"the index {refused} was left out: unreachable" in err
