"""Lock: hash-pinned requirements for the spin's platform, resolved by pip-tools.

The lock is written beside the pipeline as `<name>.<spin>.lock` so users commit
it. Its header records a hash of everything it was resolved from; while that is
unchanged the lock is reused, and `--locked` refuses a missing or stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kbuild.errors import ResolutionError
from kbuild.plan.pipeline_plan import Plan
from kbuild.plan.spins import Spin
from kbuild.resolve.indexes import probe
from kbuild.resolve.pip.resolve import ResolveFailed, resolve
from kbuild.resolve.pip.unused import drop_unused

LOCK_FORMAT = 1
_INPUTS_RE = re.compile(r"^# inputs: sha256:([0-9a-f]{64})$", re.M)
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_INDEX_RE = re.compile(r"^# index: (\S+)$", re.M)


@dataclass(frozen=True)
class LockedPackage:
    name: str  # normalized (PEP 503)
    version: str
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class Lock:
    path: Path
    inputs_hash: str
    sha256: str
    packages: tuple[LockedPackage, ...]
    index_urls: tuple[str, ...] = ()  # extra indexes it was resolved with; fetch uses them too


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class LockRequest:
    """What a lock is resolved from, and where it lives: a pipeline's artifact
    lock, or the build-side lock of the frameworks its checkpoints need."""

    path: Path
    title: str  # "pipeline 'NAME' for spin 'SPIN'"
    regenerate: str  # the command that rewrites it
    requirements: tuple[str, ...]
    spin: Spin
    index_urls: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()


def lock_path(plan: Plan) -> Path:
    return plan.pipeline.path.parent / f"{plan.pipeline.name}.{plan.spin.name}.lock"


def plan_request(plan: Plan) -> LockRequest:
    return LockRequest(
        path=lock_path(plan),
        title=f"pipeline '{plan.pipeline.name}' for spin '{plan.spin.name}'",
        regenerate=f"kbuild lock {plan.pipeline.path.name} --spin {plan.spin.name}",
        requirements=plan.requirements,
        spin=plan.spin,
        index_urls=plan.index_urls,
        unused=plan.unused,
    )


def inputs_hash(plan: Plan | LockRequest) -> str:
    request = plan_request(plan) if isinstance(plan, Plan) else plan
    spin = request.spin
    inputs = {
        "format": LOCK_FORMAT,
        "requirements": list(request.requirements),
        "python": spin.python,
        "platform": [spin.os, spin.arch, spin.manylinux],
        "indexes": list(request.index_urls),
    }
    if request.unused:  # only where a backend leaves packages out, so other locks keep their hash
        inputs["unused"] = list(request.unused)
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_lock(path: Path) -> Lock:
    text = path.read_text(encoding="utf-8")
    found = _INPUTS_RE.search(text)
    packages: list[LockedPackage] = []
    current: tuple[str, str] | None = None
    hashes: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        pin = _PIN_RE.match(stripped)
        if pin:
            if current:
                packages.append(LockedPackage(current[0], current[1], tuple(hashes)))
            current, hashes = (normalize(pin.group(1)), pin.group(3)), []
        hashes.extend(_HASH_RE.findall(stripped))
    if current:
        packages.append(LockedPackage(current[0], current[1], tuple(hashes)))
    unhashed = [p.name for p in packages if not p.hashes]
    if unhashed:
        raise ResolutionError(
            f"{path}: packages without hashes: {', '.join(unhashed)}; regenerate it with `kbuild lock`"
        )
    return Lock(
        path=path,
        inputs_hash=found.group(1) if found else "",
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        packages=tuple(sorted(packages, key=lambda p: p.name)),
        index_urls=tuple(_INDEX_RE.findall(text)),
    )


def ensure_lock(plan: Plan, *, locked: bool, offline: bool, upgrade: bool, cache: Path) -> tuple[Lock, bool]:
    """The lock for this plan, resolving it when missing or stale. Returns (lock, resolved_now)."""
    return ensure_locked(plan_request(plan), locked=locked, offline=offline, upgrade=upgrade, cache=cache)


def ensure_locked(
    request: LockRequest, *, locked: bool, offline: bool, upgrade: bool, cache: Path
) -> tuple[Lock, bool]:
    """The lock a request names, resolving it when missing or stale. Returns (lock, resolved_now)."""
    path = request.path
    wanted = inputs_hash(request)
    if path.is_file() and not upgrade:
        current = read_lock(path)
        if current.inputs_hash == wanted:
            return current, False
        stale = f"{path} is stale: the requirements or the spin changed since it was written"
    else:
        stale = f"{path} does not exist"
    if locked:
        raise ResolutionError(f"--locked: {stale}", [f"run `{request.regenerate}` and commit the lock"])
    if offline:
        raise ResolutionError(f"--offline: {stale}, and resolving needs the package index")
    text = compile_lock(request, cache=cache, upgrade=upgrade, previous=path if path.is_file() else None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return read_lock(path), True


def compile_lock(request: LockRequest, *, cache: Path, upgrade: bool, previous: Path | None) -> str:
    spin = request.spin
    header = (
        f"# kbuild lock of {request.title}\n"
        f"# (Python {spin.python}, {spin.os} {spin.arch}, manylinux_{spin.manylinux}). Commit this file.\n"
        f"# Regenerate: {request.regenerate} [--upgrade]\n"
        f"# inputs: sha256:{inputs_hash(request)}\n" + "".join(f"# index: {url}\n" for url in request.index_urls)
    )
    indexes = probe(request.index_urls)
    try:
        body = resolve(
            request.requirements,
            spin,
            indexes.usable,
            cache=cache,
            upgrade=upgrade,
            previous=previous.read_text(encoding="utf-8") if previous is not None else None,
        )
    except ResolveFailed as failed:
        raise ResolutionError(
            f"cannot resolve the requirements of {request.title} "
            f"(Python {spin.python}, {spin.arch}): {', '.join(request.requirements)}",
            [*failed.tail, *indexes.notes()],
        ) from None
    body, dropped = drop_unused(body, request.unused)
    if dropped:
        header += f"# left out (the runners never import them): {', '.join(dropped)}\n"
    return header + body
