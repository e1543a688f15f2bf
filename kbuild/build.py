"""The compile pipeline: load → validate → plan → lock → fetch → render → package → verify → report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import spec
from .cache import cache_dir
from .errors import UsageError
from .fetch import Wheel, fetch, sha256_file
from .lock import Lock, ensure_lock
from .plan import Plan, make_plan
from .render import render_root, set_sample_outputs
from .report import StageTimer, embedded_report
from .runtime.bootstrap import install_wheel
from .spins import host_spin_name, load_spin
from .targets import TARGETS
from .targets.zipapp import write_zipapp
from .verify import Verification, check_command, record_samples

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BuildOptions:
    spin: str | None = None
    target: str = "zipapp"
    output_dir: Path = Path("dist")
    locked: bool = False
    offline: bool = False
    report_path: Path | None = None


@dataclass(frozen=True)
class BuildResult:
    artifact: Path
    report_path: Path
    report: dict[str, Any]
    verification: Verification


def load_plan(pipeline_path: Path, spin_name: str | None) -> Plan:
    pipeline = spec.load_pipeline(pipeline_path)
    return make_plan(pipeline, load_spin(spin_name or host_spin_name()))


def lock_plan(plan: Plan, *, locked: bool = False, offline: bool = False, upgrade: bool = False) -> tuple[Lock, bool]:
    return ensure_lock(plan, locked=locked, offline=offline, upgrade=upgrade, cache=cache_dir())


def artifact_name(plan: Plan) -> str:
    version = f"-{plan.pipeline.version}" if plan.pipeline.version else ""
    return f"{plan.pipeline.name}{version}-{plan.spin.name}"


def build(pipeline_path: Path, options: BuildOptions, progress: Progress = _quiet) -> BuildResult:
    if options.target not in TARGETS:
        raise UsageError(f"unknown target '{options.target}'; choose one of {', '.join(TARGETS)}")
    if options.target != "zipapp":
        raise UsageError(f"--target {options.target} is not available yet; use --target zipapp")
    timer = StageTimer()
    with timer.stage("load+validate"):
        pipeline = spec.load_pipeline(pipeline_path)
    with timer.stage("plan"):
        spin = load_spin(options.spin or host_spin_name())
        plan = make_plan(pipeline, spin)
    for warning in plan.warnings:
        progress(f"warning: {warning}")
    progress(f"planned {pipeline.name} for {spin.name}: {len(plan.steps)} steps, {', '.join(plan.requirements)}")
    with timer.stage("lock"):
        lock, resolved = lock_plan(plan, locked=options.locked, offline=options.offline)
    progress(f"{'resolved' if resolved else 'using'} lock {lock.path} ({len(lock.packages)} packages)")
    with timer.stage("fetch"):
        wheels = fetch(lock, spin, cache=cache_dir(), offline=options.offline)
    progress(f"fetched {len(wheels)} wheels")

    options.output_dir.mkdir(parents=True, exist_ok=True)
    artifact = options.output_dir / f"{artifact_name(plan)}.pyz"
    embedded = embedded_report(plan, lock, wheels, options.target)
    python = spin.host_python()
    with tempfile.TemporaryDirectory(prefix="kbuild-build-") as tmp:
        root = Path(tmp) / "root"
        with timer.stage("render"):
            render_root(plan, root, embedded)
        if python and pipeline.samples:
            with timer.stage("verify"):
                progress("running the samples at build time")
                set_sample_outputs(root, _record(root, wheels, python))
        with timer.stage("package"):
            meta = {"name": pipeline.name, "version": pipeline.version or "", "spin": spin.name,
                    "python": spin.python, "arch": spin.arch}
            write_zipapp(artifact, root, wheels, meta, spin.python)
    progress(f"wrote {artifact}")
    with timer.stage("verify"):
        verification = _verify(plan, artifact, python)
    progress(f"verification: {verification.status} ({verification.detail})")

    report = {
        **embedded,
        "pipeline": {**embedded["pipeline"], "path": str(pipeline.path)},
        "artifact": {"path": str(artifact.resolve()), "sha256": sha256_file(artifact), "bytes": artifact.stat().st_size},
        "lock": {**embedded["lock"], "path": str(lock.path), "resolved": resolved},
        "verification": verification.as_dict(),
        "timings_s": timer.timings,
    }
    report_path = options.output_dir / "build-report.json"
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    report_path.write_text(text, encoding="utf-8")
    if options.report_path:
        options.report_path.parent.mkdir(parents=True, exist_ok=True)
        options.report_path.write_text(text, encoding="utf-8")
    return BuildResult(artifact, report_path, report, verification)


def _record(root: Path, wheels: list[Wheel], python: str) -> list[Any]:
    """Sample outputs from the artifact's own runtime and wheels, on a copy of the root."""
    with tempfile.TemporaryDirectory(prefix="kbuild-verify-") as tmp:
        run_root = Path(tmp)
        for top in ("site", "app"):
            shutil.copytree(root / top, run_root / top)
        for wheel in wheels:
            install_wheel(wheel.path, run_root / "site")
        return record_samples(run_root, python)


def _verify(plan: Plan, artifact: Path, python: str | None) -> Verification:
    if not plan.pipeline.samples:
        return Verification("no samples", "the pipeline has no samples to check")
    if python is None:
        return Verification(
            "not verified",
            f"spin {plan.spin.name} ({plan.spin.arch}, {plan.spin.accelerator}, Python {plan.spin.python}) "
            "cannot run on this machine; run the artifact's `check` where it is deployed",
        )
    return check_command([python, str(artifact), "check"], env=dict(os.environ))

