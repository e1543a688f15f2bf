"""Several spins, one image index: each spin's image is assembled (and
verified where it runs: in a container, or under emulation) as one platform
of the index, on this host with no emulation needed for the assembly.

    --target oci            NAME[-VERSION].oci.tar holding the index
    --target oci|image --push   the index pushed under --tag
    --target image          the host's platform loaded into the engine (an
                            engine holds one platform per tag), and said so
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kbuild.build import BuildOptions, BuildResult, build
from kbuild.errors import BuildError, UsageError
from kbuild.oci.blobs import MANIFEST, BlobStore, Descriptor
from kbuild.oci.image import load_image, platform_name, store_index
from kbuild.oci.layout import write_layout
from kbuild.oci.reference import Reference
from kbuild.oci.registry import RegistryError, push
from kbuild.spins import load_spin
from kbuild.targets.assembled import blob_store
from kbuild.verify import Verification

Progress = Callable[[str], None]


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
    report_path = options.output_dir / "build-report.json"
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if options.report_path:
        options.report_path.write_text(report_path.read_text(), encoding="utf-8")
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
