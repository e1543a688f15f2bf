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
from .targets.context import check_reference, image_settings, write_context
from .targets.deploy import write_deployment
from .targets.image import build_image, check_image, describe_image, push_image
from .targets.image import connect as connect_engine
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
    tag: str | None = None  # image and context: default NAME:VERSION, or NAME:latest
    base_image: str | None = None  # overrides the spin's image.base
    push: bool = False  # image: push to the registry named in the tag


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
    if options.target not in TARGETS:
        raise UsageError(f"unknown target '{options.target}'; choose one of {', '.join(TARGETS)}")
    _check_container_options(options)
    timer = StageTimer()
    with timer.stage("load+validate"):
        pipeline = spec.load_pipeline(pipeline_path)
    with timer.stage("plan"):
        spin = load_spin(options.spin or host_spin_name())
        plan = make_plan(pipeline, spin)
    for warning in plan.warnings:
        progress(f"warning: {warning}")
    progress(f"planned {pipeline.name} for {spin.name}: {len(plan.steps)} steps, {', '.join(plan.requirements)}")
    engine = None
    if options.target == "image":  # before the slow stages: no engine, no point
        engine = connect_engine()
        progress(f"using the Docker engine {engine.version} at {engine.address}")
    with timer.stage("lock"):
        lock, resolved = lock_plan(plan, locked=options.locked, offline=options.offline)
    progress(f"{'resolved' if resolved else 'using'} lock {lock.path} ({len(lock.packages)} packages)")
    with timer.stage("fetch"):
        wheels = fetch(lock, spin, cache=cache_dir(), offline=options.offline)
    progress(f"fetched {len(wheels)} wheels")

    options.output_dir.mkdir(parents=True, exist_ok=True)
    embedded = embedded_report(plan, lock, wheels, options.target)
    python = spin.host_python()
    settings = None
    if options.target != "zipapp":
        settings = image_settings(plan, lock.sha256, options.tag, options.base_image)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kbuild-build-") as tmp:
        root = Path(tmp) / "root"
        with timer.stage("render"):
            render_root(plan, root, embedded)
        if python and pipeline.samples:
            with timer.stage("verify"):
                progress("running the samples at build time")
                set_sample_outputs(root, _record(root, wheels, python))
        if settings is None:
            artifact = options.output_dir / f"{artifact_name(plan)}.pyz"
            with timer.stage("package"):
                meta = {"name": pipeline.name, "version": pipeline.version or "", "spin": spin.name,
                        "python": spin.python, "arch": spin.arch}
                write_zipapp(artifact, root, wheels, meta, spin.python)
        elif engine is None:
            artifact = options.output_dir / f"{artifact_name(plan)}.context.tar"
            with timer.stage("package"):
                write_context(artifact, settings, plan, root, wheels)
        else:
            context = Path(tmp) / "context.tar"
            with timer.stage("package"):
                write_context(context, settings, plan, root, wheels)
            progress(f"building image {settings.tag} on {settings.base} (network: {settings.network or 'default'})")
            with timer.stage("image"):
                built = build_image(engine, context, settings, progress)
                extra["image"] = describe_image(engine, built, settings)
    if settings is not None:
        with timer.stage("deploy"):
            deployment = write_deployment(options.output_dir, plan, settings)
        extra["deployment"] = [str(p.resolve()) for p in deployment]
    if engine is None:
        progress(f"wrote {artifact}")
        artifact_info = {"path": str(artifact.resolve()), "sha256": sha256_file(artifact),
                         "bytes": artifact.stat().st_size}
        printed = str(artifact)
    else:
        image = extra["image"]
        progress(f"built image {image['tag']} ({image['id']}, {image['bytes']} bytes, {image['layers']} layers)")
        artifact_info = {"image": image["tag"], "id": image["id"], "bytes": image["bytes"]}
        printed = image["tag"]
    with timer.stage("verify"):
        if settings is None:
            verification = _verify(plan, artifact, python)
        elif engine is None:
            verification = Verification(
                "not verified", "a build context is verified where it is built: run `check` in the image"
            )
        else:
            verification = check_image(engine, extra["image"]["id"], spin)
    progress(f"verification: {verification.status} ({verification.detail})")
    if engine is not None and options.push:
        progress(f"pushing {extra['image']['tag']}")
        with timer.stage("push"):
            extra["image"]["pushed"] = push_image(engine, extra["image"]["tag"], progress)
        progress(f"pushed {extra['image']['tag']} ({extra['image']['pushed']['digest']})")

    report = {
        **embedded,
        **extra,
        "pipeline": {**embedded["pipeline"], "path": str(pipeline.path)},
        "artifact": artifact_info,
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
    return BuildResult(printed, report_path, report, verification)


def _check_container_options(options: BuildOptions) -> None:
    if options.push and options.target != "image":
        raise UsageError("--push needs --target image")
    if options.target == "zipapp":
        given = [name for name, value in (("--tag", options.tag), ("--base-image", options.base_image)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} apply to --target image and --target context, not zipapp")
    for value in (options.tag, options.base_image):
        if value is not None:
            check_reference(value, tag=value == options.tag)


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

