"""The kbuild command line: exit codes and messages, called in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kbuild.cli import main
from tests.helpers.text import replace_once


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_prints_a_one_line_summary(capsys: pytest.CaptureFixture[str], iris_dir: Path) -> None:
    code, out, _ = run(capsys, "validate", iris_dir / "pipeline.yaml")
    assert code == 0
    assert out.count("\n") == 1 and "valid" in out and "'iris'" in out and "2 steps" in out


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (("steps:", "stepz:"), "did you mean 'steps'"),
        (("type: onnx", "type: onx"), "did you mean 'onnx'"),
        (("datatype: FP32, shape: [-1, 4]", "datatype: FLOAT32, shape: [-1, 4]"), "datatype"),
        (("input: probs", "input: prob"), "did you mean 'probs'"),
        (("models/iris.onnx", "models/missing.onnx"), "missing.onnx"),
        (("name: labels", "name: model"), "duplicate"),
        (("labels: [setosa, versicolor, virginica]", "labels: [setosa, versicolor"), "pipeline.yaml:"),
        (("model: models/iris.onnx", 'model: "models/iris\\0.onnx"'), "holds a control character"),
        (("model: models/iris.onnx", 'model: "models/iris\\t.onnx"'), "holds a control character"),
    ],
    ids=[
        "misspelt-key",
        "unknown-step-type",
        "bad-datatype",
        "unknown-variable",
        "missing-model",
        "duplicate-step",
        "broken-yaml",
        "nul-in-path",
        "tab-in-path",
    ],
)
def test_bad_specs_exit_3_with_a_line_number(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, mutate: tuple[str, str], expected: str
) -> None:
    path = iris_dir / "pipeline.yaml"
    path.write_text(replace_once(path.read_text(), *mutate))
    for argv in (("validate", path), ("--spin", "cpu-linux-x86_64", path)):
        code, _, err = run(capsys, *argv)
        assert code == 3, err
        assert expected in err
        assert "pipeline.yaml:" in err and "Traceback" not in err
        assert re.search(r"pipeline\.yaml:\d+:\d+: \$", err), err


def test_unknown_spin_exits_3_listing_the_known_ones(capsys: pytest.CaptureFixture[str], iris_dir: Path) -> None:
    code, _, err = run(capsys, "--spin", "cpu-linux-x86", iris_dir / "pipeline.yaml")
    assert code == 3
    assert "unknown spin 'cpu-linux-x86'" in err and "did you mean 'cpu-linux-x86_64'" in err
    for known in (
        "aurora-linux",
        "cpu-linux-aarch64",
        "cuda12-linux-x86_64",
        "cuda13-linux-x86_64",
        "openvino-linux-x86_64",
    ):
        assert known in err


def test_locked_refuses_a_missing_lock(capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path) -> None:
    (iris_dir / "iris.cpu-linux-x86_64.lock").unlink()
    code, _, err = run(capsys, "--locked", "-o", tmp_path, iris_dir / "pipeline.yaml")
    assert code == 4
    assert "--locked" in err and "kbuild lock" in err


def test_locked_refuses_a_stale_lock(capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path) -> None:
    path = iris_dir / "pipeline.yaml"
    path.write_text(
        replace_once(path.read_text(), "  http: {port: 8080}", "  http: {port: 8080}\n  grpc: {port: 8081}")
    )
    code, _, err = run(capsys, "--locked", "-o", tmp_path, path)
    assert code == 4 and "stale" in err


def test_offline_names_what_is_missing(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KBUILD_CACHE_DIR", str(tmp_path / "empty-cache"))
    code, _, err = run(capsys, "--offline", "-o", tmp_path / "out", iris_dir / "pipeline.yaml")
    assert code == 4
    assert "--offline" in err and "onnxruntime==" in err and "numpy==" in err


def test_second_build_needs_no_network(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path, iris_onnx: object
) -> None:
    # iris_onnx filled the wheel cache; --offline forbids any index access
    code, out, err = run(capsys, "--offline", "--locked", "-q", "-o", tmp_path, iris_dir / "pipeline.yaml")
    assert code == 0, err
    assert out.strip().endswith(".pyz") and err == ""


def test_other_targets_are_usage_errors_until_available(capsys: pytest.CaptureFixture[str], iris_dir: Path) -> None:
    code, _, err = run(capsys, "--target", "tarball", iris_dir / "pipeline.yaml")
    assert code == 2 and "tarball" in err


def test_spins_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spins")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) >= {
        "cpu-linux-x86_64",
        "cpu-linux-aarch64",
        "cuda12-linux-x86_64",
        "cuda13-linux-x86_64",
        "openvino-linux-x86_64",
        "aurora-linux",
    }
    assert "aarch64" in rows["cpu-linux-aarch64"] and "onnx" in rows["cpu-linux-aarch64"]
    assert " ve " in rows["aurora-linux"]


def test_spins_shows_one_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spins", "aurora-linux")
    assert code == 0
    assert "rockylinux:8" in out and "ve-container" in out and "cpu-linux-x86_64" in out
    assert "vector host" in out  # the CPU-fallback warning of model steps


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and "kbuild" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Exit codes" in out


def test_an_unexpected_error_is_one_line_and_a_log_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, iris_dir: Path, tmp_path: Path
) -> None:
    import kbuild.cli

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug somewhere deep")

    monkeypatch.setenv("KBUILD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(kbuild.cli, "build", broken)
    code, out, err = run(capsys, iris_dir / "pipeline.yaml")
    assert code == 1 and out == ""
    assert "Traceback" not in err
    first, second = err.splitlines()
    assert first == "error: internal error: KeyError: 'a bug somewhere deep'"
    log = Path(second.rsplit(" ", 1)[1])
    assert log.parent == tmp_path / "cache" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'a bug somewhere deep'" in text
    assert f"command: kbuild {iris_dir / 'pipeline.yaml'}" in text


def test_python_m_kbuild_cli_reports_a_bug_in_one_line(tmp_path: Path) -> None:
    """Run as `python -m kbuild.cli` (as the tests and CI call it), the module
    runs main() as it loads: the crash path must be defined by then."""
    script = (
        "import click, runpy\n"
        "def broken(*args, **kwargs):\n"
        "    raise KeyError('a bug somewhere deep')\n"
        "click.Group.main = broken\n"
        "runpy.run_module('kbuild.cli', run_name='__main__')\n"
    )
    env = {**os.environ, "KBUILD_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", script, "validate"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == "error: internal error: KeyError: 'a bug somewhere deep'"
    assert (tmp_path / "cache" / "logs").is_dir()


def test_verify_timeout_must_be_positive(capsys: pytest.CaptureFixture[str], iris_dir: Path) -> None:
    code, _, err = run(capsys, "--verify-timeout", "0", iris_dir / "pipeline.yaml")
    assert code == 2 and "--verify-timeout" in err
