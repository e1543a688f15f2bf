"""Locks are for the spin's platform, not the build machine's."""

from __future__ import annotations

import json
from pathlib import Path

from kbuild.resolve.lock import read_lock
from tests.helpers.build import elf_machines, kbuild


def test_aarch64_lock_and_artifact_hold_only_aarch64_code(iris_dir: Path, tmp_path: Path) -> None:
    proc = kbuild("lock", "--spin", "cpu-linux-aarch64", iris_dir / "pipeline.yaml")
    assert proc.returncode == 0, proc.stderr
    arm = read_lock(iris_dir / "iris.cpu-linux-aarch64.lock")
    x86 = read_lock(iris_dir / "iris.cpu-linux-x86_64.lock")
    assert {p.name for p in arm.packages} == {p.name for p in x86.packages}
    numpy_arm = next(p for p in arm.packages if p.name == "numpy")
    numpy_x86 = next(p for p in x86.packages if p.name == "numpy")
    assert not set(numpy_arm.hashes) & set(numpy_x86.hashes)  # different wheels, only the target's
    assert "cpu-linux-aarch64" in (iris_dir / "iris.cpu-linux-aarch64.lock").read_text().splitlines()[0]

    build = kbuild("--spin", "cpu-linux-aarch64", "-o", tmp_path, iris_dir / "pipeline.yaml")
    assert build.returncode == 0, build.stderr
    # checked under QEMU in a root of Debian's arm64 packages (scripts/test-tools.sh installs QEMU)
    assert "verification: verified (emulated aarch64)" in build.stderr, build.stderr
    report = json.loads((tmp_path / "build-report.json").read_text())
    assert report["verification"]["status"] == "verified (emulated aarch64)"
    assert "2 passed, 0 failed" in report["verification"]["detail"]
    assert elf_machines(tmp_path / "iris-1.0.0-cpu-linux-aarch64.pyz") == {"aarch64"}


def test_lock_is_reused_while_inputs_are_unchanged(iris_dir: Path) -> None:
    lock = iris_dir / "iris.cpu-linux-x86_64.lock"
    before = lock.read_bytes()
    proc = kbuild("lock", "--spin", "cpu-linux-x86_64", iris_dir / "pipeline.yaml")
    assert proc.returncode == 0 and "up to date" in proc.stdout
    assert lock.read_bytes() == before
