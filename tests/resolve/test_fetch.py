"""Fetch: the locked wheels for a spin, from a content-addressed cache that
verifies what it hands out."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import ResolutionError
from kbuild.plan.spins import load_spin
from kbuild.resolve.fetch import fetch
from kbuild.resolve.lock import read_lock


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
