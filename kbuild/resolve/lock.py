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


def lock_path(plan: Plan) -> Path:
    return plan.pipeline.path.parent / f"{plan.pipeline.name}.{plan.spin.name}.lock"


def inputs_hash(plan: Plan) -> str:
    spin = plan.spin
    inputs = {
        "format": LOCK_FORMAT,
        "requirements": list(plan.requirements),
        "python": spin.python,
        "platform": [spin.os, spin.arch, spin.manylinux],
        "indexes": list(plan.index_urls),
    }
    if plan.unused:  # only where a backend leaves packages out, so other locks keep their hash
        inputs["unused"] = list(plan.unused)
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
    path = lock_path(plan)
    wanted = inputs_hash(plan)
    if path.is_file() and not upgrade:
        current = read_lock(path)
        if current.inputs_hash == wanted:
            return current, False
        stale = f"{path} is stale: the pipeline's requirements or the spin changed since it was written"
    else:
        stale = f"{path} does not exist"
    if locked:
        raise ResolutionError(
            f"--locked: {stale}",
            [f"run `kbuild lock {plan.pipeline.path.name} --spin {plan.spin.name}` and commit the lock"],
        )
    if offline:
        raise ResolutionError(f"--offline: {stale}, and resolving needs the package index")
    text = compile_lock(plan, cache=cache, upgrade=upgrade, previous=path if path.is_file() else None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return read_lock(path), True


def compile_lock(plan: Plan, *, cache: Path, upgrade: bool, previous: Path | None) -> str:
    spin = plan.spin
    header = (
        f"# kbuild lock of pipeline '{plan.pipeline.name}' for spin '{spin.name}'\n"
        f"# (Python {spin.python}, {spin.os} {spin.arch}, manylinux_{spin.manylinux}). Commit this file.\n"
        f"# Regenerate: kbuild lock {plan.pipeline.path.name} --spin {spin.name} [--upgrade]\n"
        f"# inputs: sha256:{inputs_hash(plan)}\n" + "".join(f"# index: {url}\n" for url in plan.index_urls)
    )
    indexes = probe(plan.index_urls)
    try:
        body = resolve(
            plan.requirements,
            spin,
            indexes.usable,
            cache=cache,
            upgrade=upgrade,
            previous=previous.read_text(encoding="utf-8") if previous is not None else None,
        )
    except ResolveFailed as failed:
        raise ResolutionError(
            f"cannot resolve the requirements of '{plan.pipeline.name}' for spin '{spin.name}' "
            f"(Python {spin.python}, {spin.arch}): {', '.join(plan.requirements)}",
            [*failed.tail, *indexes.notes()],
        ) from None
    body, dropped = drop_unused(body, plan.unused)
    if dropped:
        header += f"# left out (the runners never import them): {', '.join(dropped)}\n"
    return header + body
