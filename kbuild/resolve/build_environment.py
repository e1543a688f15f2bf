"""The build-side environment the frameworks run in: a virtual environment of
this machine's Python holding exactly the packages of its own hash-pinned lock.

The lock lies beside the pipeline (`NAME.convert.HOST-SPIN.lock`, to commit
like the artifact's); it is resolved for the host's spin from the framework
builds that spin names (its tensorflow, torch and huggingface backends) and the exporter's
packages. Its wheels go through the same content-addressed cache as the
artifact's, and the environment is kept under the cache by the hash of its
pins: a second build, or an --offline one, needs no index.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kbuild.convert.conversions import BuildSide
from kbuild.errors import BuildError
from kbuild.plan.pipeline_plan import Plan
from kbuild.plan.spins import Spin, host_spin_name, load_spin
from kbuild.resolve.fetch import fetch
from kbuild.resolve.lock import Lock, LockRequest, ensure_locked

# What the exporter and the comparison need beside each framework build.
EXPORTER = ("onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20", "numpy>=1.26")
# framework -> the host spin's backend that names its build, and what else it reads with
FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tensorflow": ("tensorflow", ("tf2onnx>=1.16",)),
    "torch": ("torch", ()),
    # tokenizers and Pillow: the artifact's tokenize and image steps, compared with transformers' own
    "transformers": ("huggingface", ("tokenizers>=0.20", "pillow>=10")),
}


def build_side(plan: Plan, *, cache: Path, locked: bool, offline: bool) -> BuildSide | None:
    """What the convert stage needs of the build side: the lock's pins (part of
    each conversion's cache key) and the environment, made only when a
    conversion is not cached. None where the plan converts nothing."""
    if not plan.conversions:
        return None
    request = lock_request(plan)
    lock, _ = ensure_locked(request, locked=locked, offline=offline, upgrade=False, cache=cache)

    def python() -> Path:
        return ensure_environment(request, cache=cache, locked=locked, offline=offline).python

    frameworks = ", ".join(sorted({c.framework for c in plan.conversions}))
    return BuildSide(pins=pins_hash(lock), lock=request.path, frameworks=frameworks, python=python)


@dataclass(frozen=True)
class Environment:
    python: Path
    lock: Lock
    resolved: bool  # the lock was written now
    created: bool  # the environment was made now


def lock_request(plan: Plan, host: Spin | None = None) -> LockRequest:
    """The build-side lock of the frameworks this plan's conversions need."""
    spin = host or load_spin(host_spin_name())
    requirements: set[str] = set(EXPORTER)
    indexes: list[str] = []
    for framework in sorted({c.framework for c in plan.conversions}):
        backend_name, extra = FRAMEWORKS[framework]
        backend = spin.backends[backend_name]
        requirements.update([*backend.requirements, *extra])
        indexes += [u for u in backend.index_urls if u not in indexes]
    name = plan.pipeline.name
    return LockRequest(
        path=plan.pipeline.path.parent / f"{name}.convert.{spin.name}.lock",
        title=f"the checkpoint conversions of pipeline '{name}' on spin '{spin.name}' (build side)",
        regenerate=f"kbuild lock {plan.pipeline.path.name} --spin {plan.spin.name}",
        requirements=tuple(sorted(requirements, key=str.lower)),
        spin=spin,
        index_urls=tuple(indexes),
    )


def pins_hash(lock: Lock) -> str:
    text = "\n".join(f"{p.name}=={p.version} {' '.join(sorted(p.hashes))}" for p in lock.packages)
    return hashlib.sha256(f"{sys.version_info[:2]}\n{text}".encode()).hexdigest()


def ensure_environment(
    request: LockRequest, *, cache: Path, locked: bool = False, offline: bool = False, upgrade: bool = False
) -> Environment:
    """The environment of the request's lock, resolving, fetching and installing what is missing."""
    wanted = request.spin.python
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if have != wanted:
        raise BuildError(
            f"the checkpoint conversions run in an environment of this Python ({have}), "
            f"but this machine's spin {request.spin.name} is for Python {wanted}"
        )
    lock, resolved = ensure_locked(request, locked=locked, offline=offline, upgrade=upgrade, cache=cache)
    home = cache / "convert" / "envs" / pins_hash(lock)[:24]
    python = home / "bin" / "python"
    if (home / ".complete").is_file():
        return Environment(python, lock, resolved, False)
    wheels = fetch(lock, request.spin, cache=cache, offline=offline)
    home.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(home.parent / f"{home.name}.lock"):
        if (home / ".complete").is_file():  # another build made it meanwhile
            return Environment(python, lock, resolved, False)
        shutil.rmtree(home, ignore_errors=True)
        _create(home, [w.path for w in wheels])
    return Environment(python, lock, resolved, True)


class _exclusive:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = self.path.open("w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _create(home: Path, wheels: Iterable[Path]) -> None:
    steps = [
        [sys.executable, "-m", "venv", "--without-pip", str(home)],
        [sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install", "--quiet",
         "--no-deps", "--no-index", "--no-cache-dir", "--disable-pip-version-check", *map(str, wheels)],
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # the lock says what goes in, not this machine's pip settings
    with tempfile.TemporaryDirectory(prefix="kbuild-env-") as tmp:
        for command in steps:
            proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env, check=False)
            if proc.returncode != 0:
                shutil.rmtree(home, ignore_errors=True)
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
                raise BuildError(f"cannot make the checkpoint conversions' environment in {home}", tail)
    (home / ".complete").write_text("", encoding="utf-8")
