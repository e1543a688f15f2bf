"""The package's shape, as DESIGN.md section 2 lays it out: the folder
listing reads as the compile stages, the compiler reaches the runtime only
through its contract, oci/ is a library, data flows down the stages, and the
artifact's file names are written in one place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.build import REPO

PACKAGE = REPO / "kbuild"
# in the order their imports allow: a stage imports only those before it
STAGES = ("load", "plan", "convert", "resolve", "render", "verify", "targets")
# what every stage may use besides earlier stages
SHARED = ("kbuild", "kbuild.errors", "kbuild.oci", "kbuild.runtime.contract")
ARTIFACT_NAMES = ("pipeline.json", "samples.json", "build.json", "files.json", "sbom.cdx.json", "kbuild-app.json")


def modules(folder: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            yield node.module


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_a_handful_of_loose_modules_beside_the_stages() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= 6, loose
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert set(STAGES) | {"oci", "runtime"} == folders


def test_no_folder_is_named_like_tests() -> None:
    named = [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name in ("spec", "specs", "test", "tests")]
    assert named == []


def test_the_compiler_reaches_the_runtime_only_through_its_contract() -> None:
    # the converters run in the build-side environment, as an artifact would,
    # and run the artifact's own steps to prove them against the framework's
    workers = ("kbuild.convert.workers",)
    reaching = [
        (module, name)
        for module, tree in modules(PACKAGE)
        if not within(module, ("kbuild.runtime", *workers))
        for name in imported(tree)
        if within(name, ("kbuild.runtime",)) and name != "kbuild.runtime"
        if not within(name, ("kbuild.runtime.contract",))
    ]
    assert reaching == []
    proving = {
        name
        for module, tree in modules(PACKAGE / "convert" / "workers")
        for name in imported(tree)
        if within(name, ("kbuild.runtime",)) and not within(name, ("kbuild.runtime.contract",))
    }
    assert proving <= {"kbuild.runtime.steps", "kbuild.runtime.steps.image", "kbuild.runtime.steps.pool"}, proving


def test_the_contract_stands_alone() -> None:
    reaching = {
        (module, name)
        for module, tree in modules(PACKAGE / "runtime" / "contract")
        for name in imported(tree)
        if within(name, ("kbuild",)) and not within(name, ("kbuild.runtime.contract",))
    }
    # the zipapp's bootstrap hands over to the runtime it unpacked, and only then
    assert reaching == {("kbuild.runtime.contract.bootstrap", "kbuild.runtime.cli")}


def test_oci_knows_nothing_of_kbuild() -> None:
    reaching = [
        (module, name)
        for module, tree in modules(PACKAGE / "oci")
        for name in imported(tree)
        if within(name, ("kbuild",)) and not within(name, ("kbuild.oci",))
    ]
    assert reaching == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_stages_before_it(stage: str) -> None:
    allowed = SHARED + tuple(f"kbuild.{s}" for s in STAGES[: STAGES.index(stage) + 1])
    reaching = [
        (module, name)
        for module, tree in modules(PACKAGE / stage)
        for name in imported(tree)
        if within(name, ("kbuild",)) and not within(name, allowed)
    ]
    assert reaching == []


def test_the_artifacts_file_names_are_written_once() -> None:
    layout = "kbuild.runtime.contract.layout"
    written = []
    for module, tree in modules(PACKAGE):
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if any(node.value == n or node.value.endswith("/" + n) for n in ARTIFACT_NAMES):
                    written.append((module, node.value))
    assert {module for module, _ in written} == {layout}, written
