"""Fetch: the locked wheels for the spin's platform, in a content-addressed cache.

Wheels live at <cache>/wheels/<sha256>/<file name>. A wheel is taken from the
cache when its hash is one the lock allows; a second build needs no network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kbuild.errors import ResolutionError
from kbuild.plan.spins import Spin
from kbuild.resolve.indexes import probe
from kbuild.resolve.lock import Lock, LockedPackage, normalize
from kbuild.resolve.pip.download import download
from kbuild.resolve.pip.resolve import ResolveFailed


@dataclass(frozen=True)
class Wheel:
    package: LockedPackage
    path: Path
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_dir(cache: Path) -> Path:
    return cache / "wheels"


def _platform_ok(filename: str, spin: Spin) -> bool:
    """Whether a wheel's tags suit the spin (wheels of several platforms may be cached)."""
    py, abi, plat = (set(part.split(".")) for part in filename[: -len(".whl")].split("-")[-3:])
    minor = int(spin.python.split(".")[1])
    py_ok = bool(py & {spin.python_tag, "py3", f"py3{minor}"}) or (
        "abi3" in abi and any(t.startswith("cp3") and t[3:].isdigit() and int(t[3:]) <= minor for t in py)
    )
    abi_ok = bool(abi & {spin.python_tag, "abi3", "none"})
    return py_ok and abi_ok and bool(plat & {"any", *spin.platform_tags()})


def _cached(cache: Path, package: LockedPackage, spin: Spin) -> Wheel | None:
    for digest in package.hashes:
        folder = _wheel_dir(cache) / digest
        if not folder.is_dir():
            continue
        for path in folder.glob("*.whl"):
            if not _platform_ok(path.name, spin):
                continue
            if sha256_file(path) != digest:  # damaged on disk: drop it and fetch again
                shutil.rmtree(folder, ignore_errors=True)
                break
            return Wheel(package, path, digest)
    return None


def fetch(lock: Lock, spin: Spin, *, cache: Path, offline: bool) -> list[Wheel]:
    """A wheel for every locked package, downloading the missing ones unless offline."""
    found: dict[str, Wheel] = {}
    missing: list[LockedPackage] = []
    for package in lock.packages:
        wheel = _cached(cache, package, spin)
        if wheel:
            found[package.name] = wheel
        else:
            missing.append(package)
    if missing and offline:
        raise ResolutionError(
            f"--offline: {len(missing)} wheel(s) for spin '{spin.name}' are not in the cache {_wheel_dir(cache)}",
            [f"{p.name}=={p.version}" for p in missing],
        )
    if missing:
        # a lock written before locks recorded their indexes used the spin's
        for wheel in _download(missing, spin, cache, lock.index_urls or spin.extra_index_urls):
            found[wheel.package.name] = wheel
    still = [p for p in lock.packages if p.name not in found]
    if still:
        raise ResolutionError(
            f"no wheel for spin '{spin.name}' matching the lock {lock.path}",
            [f"{p.name}=={p.version}" for p in still],
        )
    return [found[p.name] for p in lock.packages]


def _download(packages: list[LockedPackage], spin: Spin, cache: Path, index_urls: tuple[str, ...]) -> list[Wheel]:
    by_name = {p.name: p for p in packages}
    indexes = probe(index_urls)
    _wheel_dir(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kbuild-fetch-", dir=cache) as tmp:
        work = Path(tmp)
        pins = [(p.name, p.version, p.hashes) for p in packages]
        try:
            downloaded = download(pins, spin, indexes.usable, work / "out")
        except ResolveFailed as failed:
            raise ResolutionError(
                f"cannot download wheels for spin '{spin.name}'", [*failed.tail, *indexes.notes()]
            ) from None
        wheels: list[Wheel] = []
        for path in downloaded:
            if path.suffix != ".whl":
                raise ResolutionError(f"{path.name} is not a wheel; spin '{spin.name}' needs binary wheels")
            package = by_name.get(normalize(path.name.split("-")[0]))
            digest = sha256_file(path)
            if package is None or digest not in package.hashes:
                raise ResolutionError(f"downloaded {path.name} does not match the lock (sha256 {digest})")
            dest_dir = _wheel_dir(cache) / digest
            dest = dest_dir / path.name
            if not dest.is_file():
                staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_wheel_dir(cache)))
                shutil.move(str(path), staging / path.name)
                try:
                    os.rename(staging, dest_dir)
                except OSError:  # another build put it there first
                    shutil.rmtree(staging, ignore_errors=True)
            wheels.append(Wheel(package, dest, digest))
    return wheels
