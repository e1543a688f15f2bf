"""The zipapp target: one .pyz that runs with a matching Python and nothing else.

Entries are sorted, timestamps come from SOURCE_DATE_EPOCH (default 1980-01-01)
and modes are fixed, so the same inputs give the same bytes. Wheels are stored
uncompressed: they are compressed already, and the bootstrap reads them in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from kbuild.plan.pipeline_plan import Plan
from kbuild.plan.spins import host_arch
from kbuild.render.artifact_root import BOOTSTRAP, dumps
from kbuild.resolve.cache import cache_dir
from kbuild.resolve.fetch import Wheel
from kbuild.runtime.contract.layout import APP_DIR, SBOM_FILE, SITE_DIR, ZIPAPP_META
from kbuild.targets.protocol import Packaged, Progress, Rendered, Staged, file_artifact
from kbuild.verify.artifact_runs import Verification, check_command, host_cpu_note, host_runner
from kbuild.verify.emulation import Qemu, debian_root, emulated_check, find_qemu
from kbuild.verify.report import StageTimer

_DEFAULT_EPOCH = 315532800  # 1980-01-01, the oldest date a zip entry can hold


def _date_time() -> tuple[int, int, int, int, int, int]:
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", _DEFAULT_EPOCH)), _DEFAULT_EPOCH)
    return time.gmtime(epoch)[:6]


def _entries(root: Path, wheels: Iterable[Wheel]) -> list[tuple[str, Path, int]]:
    entries = [
        (p.relative_to(root).as_posix(), p, zipfile.ZIP_DEFLATED)
        for top in (SITE_DIR, APP_DIR)
        for p in (root / top).rglob("*")
        if p.is_file()
    ]
    entries += [(f"wheels/{w.path.name}", w.path, zipfile.ZIP_STORED) for w in wheels]
    if (root / SBOM_FILE).is_file():
        entries.append((SBOM_FILE, root / SBOM_FILE, zipfile.ZIP_DEFLATED))
    return sorted(entries)


def payload_hash(entries: list[tuple[str, Path, int]]) -> str:
    digest = hashlib.sha256()
    for name, path, _ in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def write_zipapp(dest: Path, root: Path, wheels: list[Wheel], meta: dict[str, str], python: str) -> None:
    entries = _entries(root, wheels)
    meta = {**meta, "payload": payload_hash(entries)}
    date_time = _date_time()
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(f"#!/usr/bin/env python{python}\n".encode())
        with zipfile.ZipFile(out, "w") as zf:

            def add(name: str, data: bytes, compress: int) -> None:
                info = zipfile.ZipInfo(name, date_time)
                info.external_attr = (0o100644 & 0xFFFF) << 16
                info.create_system = 3
                info.compress_type = compress
                zf.writestr(info, data, compresslevel=6 if compress == zipfile.ZIP_DEFLATED else None)

            add("__main__.py", BOOTSTRAP.read_bytes(), zipfile.ZIP_DEFLATED)
            add(ZIPAPP_META, dumps(meta).encode(), zipfile.ZIP_DEFLATED)
            for name, path, compress in entries:
                add(name, path.read_bytes(), compress)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


def read_meta(artifact: Path) -> dict[str, str]:
    with zipfile.ZipFile(artifact) as zf:
        meta: dict[str, str] = json.loads(zf.read(ZIPAPP_META))
    return meta


class ZipappTarget:
    """NAME-VERSION-SPIN.pyz, verified by running its `check` where the spin runs here."""

    name = "zipapp"
    kind = "zipapp"

    def render(self, staged: Staged) -> Rendered:
        return Rendered()  # the root is all a zipapp holds

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged:
        plan = staged.plan
        spin = plan.spin
        artifact = staged.output_dir / f"{staged.name}.pyz"
        meta = {
            "name": plan.pipeline.name,
            "version": plan.pipeline.version or "",
            "spin": spin.name,
            "python": spin.python,
            "arch": spin.arch,
        }
        with timer.stage("package"):
            write_zipapp(artifact, staged.root, staged.wheels, meta, spin.python)
        progress(f"wrote {artifact}")
        return Packaged(str(artifact), file_artifact(artifact))

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification:
        plan = staged.plan
        spin = plan.spin
        if not plan.pipeline.samples:
            return Verification("no samples", "the pipeline has no samples to check")
        python, note = host_runner(plan)
        if python is not None:
            return check_command([python, packaged.artifact["path"], "check"], timeout=timeout).noted(note)
        reason, note = host_cpu_note(plan)
        if reason is not None or spin.os != "linux" or spin.arch == host_arch():
            return Verification("not verified", cannot_run_here(plan))
        return self._emulated(plan, packaged, timeout, note)

    def _emulated(self, plan: Plan, packaged: Packaged, timeout: float, note: str | None) -> Verification:
        """`check` under QEMU with a root of Debian's packages for the spin's architecture."""
        spin = plan.spin
        qemu = find_qemu(spin.arch)
        if not isinstance(qemu, Qemu):
            return Verification("not verified", f"{qemu}; {cannot_run_here(plan)}")
        root = debian_root(cache_dir(), spin.arch, spin.python)
        if isinstance(root, str):
            return Verification("not verified", f"{root}; {cannot_run_here(plan)}")
        return emulated_check(
            qemu,
            root,
            root / "usr" / "bin" / f"python{spin.python}",
            [packaged.artifact["path"], "check"],
            {},
            spin.arch,
            timeout,
        ).noted(note)

    def push(self, packaged: Packaged, progress: Progress) -> None:
        raise AssertionError("a zipapp is not pushed")


def cannot_run_here(plan: Plan) -> str:
    spin = plan.spin
    return (
        f"spin {spin.name} ({spin.arch}, {spin.accelerator}, Python {spin.python}) "
        "cannot run on this machine; run the artifact's `check` where it is deployed"
    )
