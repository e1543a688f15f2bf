"""Locks are for the spin's platform, not the build machine's."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from kbuild.errors import ResolutionError
from kbuild.fetch import fetch
from kbuild.lock import read_lock
from kbuild.spins import load_spin
from tests.helpers.build import kbuild

ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


def elf_machines(pyz: Path) -> set[str]:
    """The CPU architecture of every ELF object inside the artifact's wheels."""
    found: set[str] = set()
    with zipfile.ZipFile(pyz) as outer:
        for name in outer.namelist():
            if not name.startswith("wheels/"):
                continue
            with outer.open(name) as nested, zipfile.ZipFile(nested) as wheel:
                for member in wheel.namelist():
                    with wheel.open(member) as f:
                        head = f.read(20)
                    if head[:4] == b"\x7fELF":
                        found.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
    return found


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
    assert "not verified" in build.stderr
    assert elf_machines(tmp_path / "iris-1.0.0-cpu-linux-aarch64.pyz") == {"aarch64"}


def test_lock_is_reused_while_inputs_are_unchanged(iris_dir: Path) -> None:
    lock = iris_dir / "iris.cpu-linux-x86_64.lock"
    before = lock.read_bytes()
    proc = kbuild("lock", "--spin", "cpu-linux-x86_64", iris_dir / "pipeline.yaml")
    assert proc.returncode == 0 and "up to date" in proc.stdout
    assert lock.read_bytes() == before


def test_a_damaged_cached_wheel_is_fetched_again(iris_dir: Path, tmp_path: Path) -> None:
    lock = read_lock(iris_dir / "iris.cpu-linux-x86_64.lock")
    spin = load_spin("cpu-linux-x86_64")
    first = fetch(lock, spin, cache=tmp_path / "cache", offline=False)
    victim = next(w for w in first if w.package.name == "numpy")
    victim.path.write_bytes(b"not a wheel")
    again = fetch(lock, spin, cache=tmp_path / "cache", offline=False)
    repaired = next(w for w in again if w.package.name == "numpy")
    assert repaired.path.read_bytes()[:2] == b"PK"
    repaired.path.write_bytes(b"damaged again")
    with pytest.raises(ResolutionError) as info:
        fetch(lock, spin, cache=tmp_path / "cache", offline=True)
    assert "numpy==" in info.value.render()
