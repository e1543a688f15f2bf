"""kbuild is strictly typed (mypy --strict, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from build_helpers import REPO


def test_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "kbuild"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
