"""The code's own checks, from the project's configuration (pyproject.toml):
mypy --strict over kbuild, tests and bench, ruff's lint rules and its
formatter (with `fmt: skip` kept for the few tables that read better)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers.build import REPO
from tests.helpers.vacuous import vacuous_asserts


def test_mypy_strict_over_code_tests_and_bench() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and {"kbuild", "tests", "bench"} <= set(config["files"])


def test_ruff_lint() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_holds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


FMT_SKIP_LIMIT = 10


def test_fmt_skip_is_rare() -> None:
    marked = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("kbuild", "tests", "bench")
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.rstrip().endswith("# fmt: " + "skip")  # split, or this line would count itself
    ]
    assert len(marked) <= FMT_SKIP_LIMIT, marked


def test_every_package_is_installed_by_pip_install_dot() -> None:
    """`pip install .` (not only editable) installs the packages pyproject.toml
    lists: every folder of kbuild/ with Python modules must be among them."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {str(p.parent.relative_to(REPO)).replace("/", ".") for p in (REPO / "kbuild").rglob("*.py")}
    assert folders <= listed, sorted(folders - listed)


def test_no_assert_tests_a_constant_or_a_name_the_test_did_not_compute() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {source}"
        for folder in ("tests", "bench")
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, source in vacuous_asserts(path)
    ]
    assert found == [], "asserts that cannot fail:\n" + "\n".join(found)


def test_the_vacuous_assert_lint_finds_what_it_is_for(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import enum\nLIMIT = 3\n\n\ndef test_a(tmp_path):\n    from cyclonedx.schema import OutputFormat\n\n"
        "    found = tmp_path.exists()\n    assert OutputFormat.JSON\n    assert True\n    assert LIMIT\n"
        "    assert enum.Enum\n    assert found\n    assert tmp_path.name\n    assert found, 'why'\n"
    )
    assert [line for line, _ in vacuous_asserts(sample)] == [9, 10, 11, 12]
