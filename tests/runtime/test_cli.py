"""The artifact's command line: predict, check, record, info."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kbuild.runtime.cli import _with_default_command, main
from tests.helpers.build import free_port
from tests.helpers.runtime import (
    REPO,
    SETOSA,
    VIRGINICA,
    subprocess_env,
    write_guarded_iris,
)

SAMPLES: list[dict[str, Any]] = [
    {"inputs": {"features": [SETOSA]}, "expect": {"label": ["setosa"]}, "outputs": None},
    {"inputs": {"features": [VIRGINICA, SETOSA]}, "outputs": None},
    {"inputs": {"features": [0, 0, 0, 0]}, "outputs": None},  # dropped by the guard
]


@pytest.fixture
def root(tmp_path: Path, models: dict[str, Path]) -> Path:
    return write_guarded_iris(
        tmp_path / "root",
        models["onnx"],
        samples=SAMPLES,
        build={"spin": "cpu-linux-x86_64", "artifact": {"sha256": "ab"}},
    )


def cli(
    root: Path,
    *args: str,
    stdin: str | None = None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_from_file_and_stdin(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"features": [SETOSA, VIRGINICA]}))
    code, out, err = cli(root, "predict", str(request), capsys=capsys, monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["label"] == ["setosa", "virginica"]
    assert len(result["probability"]) == 2 and all(p > 0.5 for p in result["probability"])

    code, out, _ = cli(root, "predict", stdin='{"features": [0, 0, 0, 0]}', capsys=capsys, monkeypatch=monkeypatch)
    assert (code, out) == (0, "null\n")  # a dropped record


def test_a_bad_thread_count_is_a_usage_error(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KBUILD_THREADS", "many")
    code, out, err = cli(
        root, "predict", stdin='{"features": [[5.1, 3.5, 1.4, 0.2]]}', capsys=capsys, monkeypatch=monkeypatch
    )
    assert (code, out) == (2, "") and "KBUILD_THREADS must be an integer >= 1, got 'many'" in err
    monkeypatch.setenv("KBUILD_THREADS", "1")
    code, out, _ = cli(
        root, "predict", stdin='{"features": [[5.1, 3.5, 1.4, 0.2]]}', capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0 and json.loads(out)["label"] == ["setosa"]


@pytest.mark.parametrize(
    "stdin, code, message",
    [
        (
            '{"features": [[1, 2, 3]]}',
            2,
            "error: input 'features': expected shape [-1, 4], got [1, 3]\n",
        ),
        (
            '{"features": ',
            2,
            "error: malformed JSON: Expecting value: line 1 column 14 (char 13)\n",
        ),
        ('{"feature": [1, 2, 3, 4]}', 2, "error: unknown input 'feature' (inputs: features)\n"),
        (
            '{"features": [-1, 2, 3, 4]}',
            4,
            "error: step 'guard' (python) failed: ValueError: negative measurement\n",
        ),
    ],
)
def test_predict_errors_are_one_message_no_traceback(
    root: Path,
    stdin: str,
    code: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli(root, "predict", stdin=stdin, capsys=capsys, monkeypatch=monkeypatch) == (
        code,
        "",
        message,
    )


def test_record_then_check_passes(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli(root, "record", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    recorded = json.loads(out)
    assert [r.get("label") for r in recorded] == [["setosa"], ["virginica", "setosa"], None]
    assert recorded[2] == {}  # dropped

    samples_path = root / "app" / "samples.json"
    samples = json.loads(samples_path.read_text())
    for sample, outputs in zip(samples, recorded, strict=True):
        sample["outputs"] = outputs
    samples_path.write_text(json.dumps(samples))
    code, out, _ = cli(root, "check", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    assert out.splitlines() == [
        "sample 1: ok",
        "sample 2: ok",
        "sample 3: ok",
        "3 samples: 3 passed, 0 failed",
    ]


def test_check_reports_each_difference(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli(root, "record", capsys=capsys, monkeypatch=monkeypatch)
    recorded = json.loads(out)
    p = recorded[0]["probability"][0]
    samples = [
        # recorded probability off by more than rtol 1e-5
        {
            "inputs": SAMPLES[0]["inputs"],
            "outputs": {"label": ["setosa"], "probability": [p * (1 + 1e-3)]},
        },
        # within tolerance, and an expect without the batch axis
        {
            "inputs": SAMPLES[0]["inputs"],
            "outputs": {"label": ["setosa"], "probability": [p * (1 + 1e-7)]},
            "expect": {"label": "setosa"},
        },
        {"inputs": SAMPLES[0]["inputs"], "outputs": None, "expect": {"label": ["virginica"]}},
        {"inputs": SAMPLES[0]["inputs"], "outputs": None},
        {"inputs": {"features": [1, 2]}, "outputs": None},
        {"inputs": SAMPLES[2]["inputs"], "outputs": None, "expect": {"label": ["setosa"]}},
    ]
    (root / "app" / "samples.json").write_text(json.dumps(samples))
    code, out, _ = cli(root, "check", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "sample 1: FAIL"
    assert lines[1].startswith("  output 'probability': recorded [") and "(max difference" in lines[1]
    assert lines[2:] == [
        "sample 2: ok",
        "sample 3: FAIL",
        '  output \'label\': expected ["virginica"], got ["setosa"]',
        "sample 4: ran, not verified (no recorded outputs or expect)",
        "sample 5: FAIL",
        "  input 'features': expected shape [-1, 4], got [2]",
        "sample 6: FAIL",
        '  the record was dropped; expected outputs {"label": ["setosa"]}',
        "6 samples: 1 passed, 4 failed, 1 not verified",
    ]


def test_record_fails_on_a_failing_sample(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "app" / "samples.json").write_text(json.dumps([{"inputs": {"features": [-1, 0, 0, 0]}}]))
    code, out, err = cli(root, "record", capsys=capsys, monkeypatch=monkeypatch)
    assert (code, out) == (4, "")
    assert err == "error: sample 1: step 'guard' (python) failed: ValueError: negative measurement\n"


def test_info_prints_the_build_report(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli(root, "info", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out) == {
        "spin": "cpu-linux-x86_64",
        "artifact": {"sha256": "ab"},
    }
    (root / "app" / "build.json").unlink()
    code, out, err = cli(root, "info", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 3 and err.startswith("error: no build report")


def test_usage_errors(root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli(root, "bogus", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and "invalid choice: 'bogus'" in err
    monkeypatch.setenv("KBUILD_HTTP_PORT", "http")
    code, _, err = cli(root, capsys=capsys, monkeypatch=monkeypatch)  # serve is the default
    assert (code, err) == (2, "error: KBUILD_HTTP_PORT='http' is not a port number\n")
    assert main([], root=root) == 2  # main(argv, root) is the bootstrap's entry; same default


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], ["serve"]),
        (["--http-port", "9000"], ["serve", "--http-port", "9000"]),
        (["--root", "r"], ["--root", "r", "serve"]),
        (["--root=r", "--http-port", "1"], ["--root=r", "serve", "--http-port", "1"]),
        (["--root", "r", "check"], ["--root", "r", "check"]),
        (["predict", "f.json"], ["predict", "f.json"]),
        (["-h"], ["-h"]),
    ],
)
def test_serve_is_the_default_command(argv: list[str], expected: list[str]) -> None:
    assert _with_default_command(argv) == expected


def test_python_dash_m_entry_point(root: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kbuild.runtime", "--root", str(root), "predict"],
        input=json.dumps({"features": SETOSA}),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO.parent,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["label"] == ["setosa"]

    run = subprocess.run(
        [sys.executable, "-m", "kbuild.runtime", "--root", str(root), "predict"],
        input="[1]",
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO.parent,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr == "error: expected a JSON object of named inputs, got a list\n"


def test_serve_refuses_a_transport_this_artifact_lacks(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    spec["serve"] = {"http": {"host": "127.0.0.1", "port": free_port()}, "grpc": {"port": free_port()}}
    spec_path.write_text(json.dumps(spec))
    # As in an artifact built without gRPC: the module is not there to import.
    monkeypatch.setitem(sys.modules, "kbuild.runtime.transports.grpc", None)
    code, _, err = cli(root, "serve", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 3
    assert err.endswith("error: serve.grpc: this artifact has no grpc server (kbuild.runtime.transports.grpc)\n")


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "libstdc++.so.6: cannot open shared object file: No such file or directory",
            "install libstdc++6 (Debian/Ubuntu)",
        ),
        ("libgomp.so.1: cannot open shared object file: No such file or directory", "install libgomp1"),
        ("libfoo.so.3: cannot open shared object file", "lacks the system library libfoo.so.3"),
    ],
)
def test_a_missing_system_library_is_one_line_naming_it(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, message: str, expected: str
) -> None:
    from kbuild.runtime.contract.errors import missing_library

    assert missing_library(ImportError("No module named 'x'")) is None
    assert expected in (missing_library(ImportError(message)) or "")
    import kbuild.runtime.pipeline_runner as pipeline_module

    def broken(*args: object, **kwargs: object) -> None:
        raise ImportError(f"Error importing numpy: {message}\n\nvery long advice...")

    monkeypatch.setattr(pipeline_module.PipelineRunner, "load", broken)
    code, _, err = cli(root, "check", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 3 and err.count("\n") == 1 and expected in err and "Traceback" not in err


EXIT_SCRIPT = """
import atexit, sys, threading, time
import kbuild.runtime.lifecycle as lifecycle
from kbuild.runtime.cli import exit_process
atexit.register(lambda: print("finalized", flush=True))
if sys.argv[1] == "loading":
    threading.Thread(target=time.sleep, args=(60,), name=lifecycle.LOAD_THREAD, daemon=True).start()
exit_process(int(sys.argv[2]))
"""


@pytest.mark.parametrize(("state", "finalized"), [("loading", False), ("loaded", True)])
def test_a_stop_during_the_load_skips_finalization(state: str, finalized: bool) -> None:
    """C++ runtimes abort (exit -6) when the interpreter's finalization destroys
    their statics under a thread still loading a model: the process then ends
    without it, with the code it was given."""
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, state, "4"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert ("finalized" in proc.stdout) is finalized
