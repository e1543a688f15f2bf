"""The compile pipeline, one stage after another:

    load+validate -> plan -> convert -> lock -> fetch -> samples -> render -> package -> verify -> [push] -> report

Every target runs the same stages; what differs lives behind targets.base.Target.
The samples are recorded (in the artifact's own runtime, on a scratch root)
before the artifact's root is rendered, so the root is written once.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kbuild.convert.conversions import convert_plan
from kbuild.errors import BuildError, SpecError, UsageError
from kbuild.load.deploy_settings import deploy_settings
from kbuild.load.pipeline import load_pipeline
from kbuild.oci.blobs import MANIFEST, BlobStore, Descriptor
from kbuild.oci.image import load_image, platform_name, store_index
from kbuild.oci.layout import write_layout
from kbuild.oci.reference import Reference
from kbuild.oci.registry import RegistryError, push
from kbuild.plan.pipeline_plan import Plan, make_plan
from kbuild.plan.spins import host_spin_name, load_spin
from kbuild.render.artifact_root import render_root, write_files_list
from kbuild.resolve.build_environment import build_side
from kbuild.resolve.cache import cache_dir
from kbuild.resolve.fetch import fetch
from kbuild.resolve.lock import Lock, ensure_lock
from kbuild.runtime.contract.layout import SBOM_FILE
from kbuild.targets import make_target
from kbuild.targets.assembled_targets import blob_store
from kbuild.targets.protocol import Staged
from kbuild.verify.artifact_runs import DEFAULT_TIMEOUT_S, Verification, samples_at_build_time
from kbuild.verify.report import StageTimer, embedded_report, final_report, write_report
from kbuild.verify.sbom import write_sbom

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
    member: bool = False  # one platform of a multi-platform build (build_index below): assemble only


@dataclass(frozen=True)
class BuildResult:
    artifact: str  # a file for zipapp and context, an image reference for image
    report_path: Path
    report: dict[str, Any]
    verification: Verification


def load_plan(pipeline_path: Path, spin_name: str | None) -> Plan:
    pipeline = load_pipeline(pipeline_path)
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
        pipeline = load_pipeline(pipeline_path)
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
    with timer.stage("convert"):
        side = build_side(plan, cache=cache_dir(), locked=options.locked, offline=options.offline)
        converted = convert_plan(plan, side, cache=cache_dir(), progress=progress)
    plan = converted.plan
    for record in converted.report:
        diffs = ", ".join(f"{name} {o['max_abs_diff']:.2g}" for name, o in record["outputs"].items())
        progress(
            f"converted step '{record['step']}' ({record['type']}) to ONNX{' (cached)' if record['cached'] else ''}: "
            f"{record['inputs_compared']} inputs compared, largest difference {diffs}"
        )
    with timer.stage("lock"):
        lock, resolved = lock_plan(plan, locked=options.locked, offline=options.offline)
    progress(f"{'resolved' if resolved else 'using'} lock {lock.path} ({len(lock.packages)} packages)")
    with timer.stage("fetch"):
        wheels = fetch(lock, plan.spin, cache=cache_dir(), offline=options.offline)
    progress(f"fetched {len(wheels)} wheels")

    options.output_dir.mkdir(parents=True, exist_ok=True)
    embedded = embedded_report(plan, lock, wheels, target.kind, converted.report)
    with tempfile.TemporaryDirectory(prefix="kbuild-build-") as tmp:
        scratch = Path(tmp)
        with timer.stage("samples"):
            outputs, measured = samples_at_build_time(
                plan, wheels, scratch / "record", options.verify_timeout, progress
            )
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
        shutil.copyfile(staged.root / SBOM_FILE, sbom_path)
        with timer.stage("verify"):
            verification = target.verify(staged, packaged, options.verify_timeout)
    progress(f"verification: {verification.status} ({verification.detail})")
    if options.push:
        with timer.stage("push"):
            target.push(packaged, progress)
    report = final_report(
        embedded,
        target=options.target,
        packaged=(packaged.artifact, packaged.sections),
        pipeline_path=pipeline.path,
        lock_path=lock.path,
        resolved=resolved,
        sbom_path=sbom_path,
        verification=verification,
        measured=measured,
        deploy=deploy,
        timings=timer.timings,
        conversions=converted.report,
        convert_lock=converted.lock,
    )
    report_path = write_report(report, options.output_dir, options.report_path)
    return BuildResult(packaged.printed, report_path, report, verification)


# -- several spins, one image index
#
# Several spins, one image index: each spin's image is assembled (and
# verified where it runs: in a container, or under emulation) as one platform
# of the index, on this host with no emulation needed for the assembly.
#
#     --target oci            NAME[-VERSION].oci.tar holding the index
#     --target oci|image --push   the index pushed under --tag
#     --target image          the host's platform loaded into the engine (an
#                             engine holds one platform per tag), and said so


def base_images(values: Sequence[str], spins: Sequence[str]) -> dict[str | None, str]:
    """--base-image values: SPIN=IMAGE for one spin, IMAGE for every spin. None keys the default."""
    found: dict[str | None, str] = {}
    for value in values:
        spin, sep, image = value.partition("=")
        if sep and spin and "/" not in spin and ":" not in spin:
            if spin not in spins:
                raise UsageError(f"--base-image {value}: {spin} is not one of the spins built ({', '.join(spins)})")
            found[spin] = image
        else:
            if None in found:
                raise UsageError("--base-image is given twice for every spin; name the spin: --base-image SPIN=IMAGE")
            found[None] = value
    return found


def build_index(
    pipeline_path: Path,
    options: BuildOptions,
    spins: Sequence[str],
    bases: Mapping[str | None, str],
    progress: Progress,
) -> BuildResult:
    if options.target not in ("oci", "image"):
        raise UsageError(
            f"several --spin options make one image index: use --target oci or image, not {options.target}"
        )
    host = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    engine = None
    if options.target == "image" and not options.push:
        from kbuild.targets.engine import connect

        engine = connect()
    results: dict[str, BuildResult] = {}
    for spin in spins:
        progress(f"== {spin}")
        member = replace(
            options,
            spin=spin,
            target="oci",
            member=True,
            push=False,
            base_image=bases.get(spin) or bases.get(None),
            output_dir=options.output_dir / spin,
            report_path=None,
        )
        results[spin] = build(pipeline_path, member, progress)
    store = blob_store()
    first = next(iter(results.values())).report
    images = [load_image(store, _manifest(store, r.report)) for r in results.values()]
    index = store_index(store, images)
    tag: str = options.tag or first["image"]["tag"]
    blobs = [b for image in images for b in (*image.layers, image.config_descriptor)]
    report: dict[str, Any] = {
        "target": options.target,
        "index": {
            "digest": index.digest,
            "tag": tag,
            "platforms": {
                spin: {"platform": platform_name(i.platform), "digest": i.manifest.digest}
                for spin, i in zip(results, images, strict=True)
            },
        },
        "builds": {spin: r.report for spin, r in results.items()},
    }
    printed = index.digest
    if options.target == "oci":
        name = f"{first['pipeline']['name']}" + (
            f"-{first['pipeline']['version']}" if first["pipeline"]["version"] else ""
        )
        archive = options.output_dir / f"{name}.oci.tar"
        write_layout(archive, store, index, [*blobs, *(i.manifest for i in images)], tag)
        report["artifact"] = {"path": str(archive.resolve()), "digest": index.digest}
        printed = str(archive)
        progress(f"wrote {archive} (index {index.digest}: {', '.join(platform_name(i.platform) for i in images)})")
    if options.push:
        reference = Reference.parse(tag)
        try:
            count = push(store, reference, blobs, [i.manifest for i in images], index, progress)
        except RegistryError as error:
            raise BuildError(f"pushing {tag} failed", [str(error)]) from None
        report["index"]["pushed"] = {
            "registry": reference.registry,
            "uploaded_blobs": len(count.uploaded),
            "present_blobs": len(count.present),
        }
        progress(f"pushed the index {tag} ({index.digest})")
        printed = f"{tag}@{index.digest}" if options.target == "image" else printed
    elif options.target == "image":
        assert engine is not None
        runnable = [s for s in spins if load_spin(s).arch == host]
        if not runnable:
            raise BuildError(
                f"none of the spins runs on this {host} engine, and an engine holds one platform per tag",
                ["push the index with --push, or write it with --target oci"],
            )
        spin = runnable[0]
        from kbuild.targets.image import load_image as load_into_engine

        image = images[list(results).index(spin)]
        scratch = options.output_dir / spin / "image.tar"
        write_layout(scratch, store, image.manifest, list(image.blobs), tag, image)
        loaded = load_into_engine(engine, str(scratch), tag)
        scratch.unlink()
        report["loaded"] = {"spin": spin, "id": loaded, "tag": tag}
        progress(
            f"loaded only {spin} ({platform_name(image.platform)}) into the engine as {tag}: "
            "an engine holds one platform per tag; --push sends the whole index"
        )
        printed = tag
    verification = _worst([r.verification for r in results.values()])
    report["verification"] = {
        **verification.as_dict(),
        "by_spin": {s: r.verification.as_dict() for s, r in results.items()},
    }
    report_path = write_report(report, options.output_dir, options.report_path)
    return BuildResult(printed, report_path, report, verification)


def _manifest(store: BlobStore, report: Mapping[str, Any]) -> Descriptor:
    """The descriptor of the manifest a platform's build assembled into the store."""
    digest = report["image"]["digest"]
    return Descriptor(MANIFEST, digest, store.path(digest).stat().st_size)


def _worst(verifications: list[Verification]) -> Verification:
    for status in ("not verified", "no samples"):
        for v in verifications:
            if v.status == status:
                return v
    return Verification(
        "passed" if all(v.status == "passed" for v in verifications) else verifications[-1].status,
        "; ".join(v.detail for v in verifications),
    )
