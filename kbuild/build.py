"""The compile pipeline, one stage after another:

    load+validate -> plan -> lock -> fetch -> samples -> render -> package -> verify -> [push] -> report

Every target runs the same stages; what differs lives behind targets.base.Target.
The samples are recorded (in the artifact's own runtime, on a scratch root)
before the artifact's root is rendered, so the root is written once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild import spec
from kbuild.cache import cache_dir
from kbuild.deploy_settings import deploy_settings
from kbuild.errors import SpecError
from kbuild.fetch import Wheel, fetch, sha256_file
from kbuild.lock import Lock, ensure_lock
from kbuild.plan import Plan, make_plan
from kbuild.render import render_root, write_files_list
from kbuild.report import StageTimer, embedded_report
from kbuild.runtime.bootstrap import install_wheel
from kbuild.sbom import SBOM_NAME, write_sbom
from kbuild.spins import host_spin_name, load_spin
from kbuild.targets import make_target
from kbuild.targets.base import Staged
from kbuild.verify import DEFAULT_TIMEOUT_S, Verification, host_runner, record_samples

Progress = Callable[[str], None]
# the targets whose artifacts carry the pipeline to others, with k8s/ beside them
CONTAINER_TARGETS = ("image", "oci", "context")


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
    tag: str | None = None  # image and context: default NAME:VERSION, or NAME:latest
    base_image: str | None = None  # overrides the spin's image.base
    push: bool = False  # image: push to the registry named in the tag
    verify_timeout: float = DEFAULT_TIMEOUT_S  # seconds for recording the samples, and for `check`
    member: bool = False  # one platform of a multi-platform build (kbuild.multi): assemble only


@dataclass(frozen=True)
class BuildResult:
    artifact: str  # a file for zipapp and context, an image reference for image
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
    target = make_target(
        options.target,
        tag=options.tag,
        base_image=options.base_image,
        push=options.push,
        progress=progress,
        offline=options.offline,
        member=options.member,
    )
    timer = StageTimer()
    with timer.stage("load+validate"):
        pipeline = spec.load_pipeline(pipeline_path)
    deploy = None
    if options.target in CONTAINER_TARGETS:
        if pipeline.literal_secrets:
            count = len(pipeline.literal_secrets)
            raise SpecError(
                f"{pipeline.path}: {count} secret{'s' if count != 1 else ''} written in the pipeline "
                f"would go into the {options.target}",
                list(pipeline.literal_secrets),
            )
        deploy = deploy_settings(pipeline)
        for warning in deploy.warnings:
            progress(f"warning: {warning}")
    with timer.stage("plan"):
        plan = make_plan(pipeline, load_spin(options.spin or host_spin_name()))
    for warning in plan.warnings:
        progress(f"warning: {warning}")
    progress(f"planned {pipeline.name} for {plan.spin.name}: {len(plan.steps)} steps, {', '.join(plan.requirements)}")
    with timer.stage("lock"):
        lock, resolved = lock_plan(plan, locked=options.locked, offline=options.offline)
    progress(f"{'resolved' if resolved else 'using'} lock {lock.path} ({len(lock.packages)} packages)")
    with timer.stage("fetch"):
        wheels = fetch(lock, plan.spin, cache=cache_dir(), offline=options.offline)
    progress(f"fetched {len(wheels)} wheels")

    options.output_dir.mkdir(parents=True, exist_ok=True)
    embedded = embedded_report(plan, lock, wheels, target.kind)
    with tempfile.TemporaryDirectory(prefix="kbuild-build-") as tmp:
        scratch = Path(tmp)
        with timer.stage("samples"):
            outputs, measured = _record(plan, wheels, scratch / "record", options.verify_timeout, progress)
        staged = Staged(
            plan, lock, wheels, scratch / "root", options.output_dir, artifact_name(plan), scratch, measured
        )
        with timer.stage("render"):
            render_root(plan, staged.root, embedded, outputs)
            rendered = target.render(staged)
            write_sbom(plan, wheels, staged.root, target.kind, rendered.sbom_base)
            write_files_list(staged.root, [w.path for w in wheels])
        packaged = target.package(staged, rendered, timer, progress)
        sbom_path = options.output_dir / f"{staged.name}.cdx.json"
        shutil.copyfile(staged.root / SBOM_NAME, sbom_path)
        with timer.stage("verify"):
            verification = target.verify(staged, packaged, options.verify_timeout)
    progress(f"verification: {verification.status} ({verification.detail})")
    if options.push:
        with timer.stage("push"):
            target.push(packaged, progress)

    report = {
        **embedded,
        **packaged.sections,
        "target": options.target,
        "pipeline": {**embedded["pipeline"], "path": str(pipeline.path)},
        "artifact": packaged.artifact,
        "lock": {**embedded["lock"], "path": str(lock.path), "resolved": resolved},
        "sbom": {"path": str(sbom_path.resolve()), "sha256": sha256_file(sbom_path)},
        "verification": verification.as_dict(),
        "measured": measured,
        **(
            {
                "deploy": {
                    "scale_on": deploy.scale_on,
                    "replicas": {"min": deploy.min_replicas, "max": deploy.max_replicas},
                    "secret": deploy.secret,
                    "warnings": list(deploy.warnings),
                }
            }
            if deploy
            else {}
        ),
        "timings_s": timer.timings,
    }
    report_path = _write_report(report, options)
    return BuildResult(packaged.printed, report_path, report, verification)


def _record(
    plan: Plan, wheels: list[Wheel], run_root: Path, timeout: float, progress: Progress
) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The samples' outputs from the artifact's own runtime and wheels, with
    what the run measured, where the spin runs on this machine; (None, None)
    where it cannot (not recorded)."""
    python, _ = host_runner(plan)
    if python is None or not plan.pipeline.samples:
        return None, None
    progress("running the samples at build time")
    render_root(plan, run_root, {})
    for wheel in wheels:
        install_wheel(wheel.path, run_root / "site")
    return record_samples(run_root, python, timeout)


def _write_report(report: dict[str, Any], options: BuildOptions) -> Path:
    report_path = options.output_dir / "build-report.json"
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    report_path.write_text(text, encoding="utf-8")
    if options.report_path:
        options.report_path.parent.mkdir(parents=True, exist_ok=True)
        options.report_path.write_text(text, encoding="utf-8")
    return report_path
