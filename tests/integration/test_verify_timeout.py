"""A pipeline whose samples never finish ends the build with exit 6 and the
step's name, within the timeout, and never with a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.build import kbuild
from tests.helpers.text import replace_once

# A python step alone: nothing heavy to import, so the timeout measures the step.
PIPELINE = """\
kbuild: 1
name: hangs
inputs:
  x: {datatype: FP32, shape: [-1, 2]}
outputs:
  y: {datatype: FP32, shape: [-1, 2]}
steps:
  - {name: stuck, type: python, function: "stuck:make", code: stuck.py, inputs: [x], outputs: [y]}
samples:
  - inputs: {x: [[1.0, 2.0]]}
"""
HANGS = {
    "running": "import time\n\ndef make(config):\n    def run(variables):\n        while True:\n            time.sleep(1)\n    return run\n",
    "loading": "import time\n\ndef make(config):\n    while True:\n        time.sleep(1)\n",
}


@pytest.mark.parametrize("where", sorted(HANGS))
def test_a_hanging_step_exits_6_naming_it(tmp_path: Path, where: str) -> None:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "stuck.py").write_text(HANGS[where])
    lock = kbuild("lock", "--spin", "cpu-linux-x86_64", tmp_path / "pipeline.yaml")
    assert lock.returncode == 0, lock.stderr
    started = time.monotonic()
    proc = kbuild(
        "--spin", "cpu-linux-x86_64", "--verify-timeout", "5", "-o", tmp_path / "dist", tmp_path / "pipeline.yaml"
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 6, proc.stderr
    assert elapsed < 60
    assert "Traceback" not in proc.stderr
    assert f"did not finish within 5 s: it was {where} step 'stuck' (python)" in proc.stderr


def test_a_slow_but_finishing_step_passes_with_a_larger_timeout(iris_dir: Path, tmp_path: Path) -> None:
    temper = iris_dir / "temper.py"
    temper.write_text(
        replace_once(temper.read_text(), "    def temper(", "    import time\n\n    time.sleep(2)\n\n    def temper(")
    )
    proc = kbuild("--spin", "cpu-linux-x86_64", "--verify-timeout", "60", "-o", tmp_path, iris_dir / "sklearn.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "verification: passed" in proc.stderr
