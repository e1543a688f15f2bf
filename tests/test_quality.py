"""The code's own checks, from the project's configuration (pyproject.toml):
mypy --strict over kbuild, tests and bench, and ruff's lint rules."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.helpers.build import REPO


def test_mypy_strict_over_code_tests_and_bench() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and {"kbuild", "tests", "bench"} <= set(config["files"])


def test_ruff_lint() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_package_is_installed_by_pip_install_dot() -> None:
    """`pip install .` (not only editable) installs the packages pyproject.toml
    lists: every folder of kbuild/ with Python modules must be among them."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {str(p.parent.relative_to(REPO)).replace("/", ".") for p in (REPO / "kbuild").rglob("*.py")}
    assert folders <= listed, sorted(folders - listed)
