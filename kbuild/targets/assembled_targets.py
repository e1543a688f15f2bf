"""What the image and oci targets share: the image assembled from its base and
kbuild's layers (oci.assemble), verified where it runs, pushed through the
registry API.

Verification: where an engine runs the image's platform, `check` runs in a
container; otherwise (no engine, another architecture) it runs under QEMU's
user-mode emulation in the image's own root file system.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kbuild.errors import BuildError
from kbuild.oci.blobs import BlobStore
from kbuild.oci.image import platform_name
from kbuild.oci.reference import Reference
from kbuild.oci.registry import RegistryError, push
from kbuild.oci.rootfs import cached_root, extract, find_in_root
from kbuild.plan.spins import python_of_version
from kbuild.resolve.cache import cache_dir
from kbuild.runtime.contract.layout import SITE_DIR
from kbuild.targets.base_images import Base, Bases
from kbuild.targets.deploy import render_deployment, write_deployment
from kbuild.targets.engine import Engine
from kbuild.targets.image_assembly import Assembled, ImagePlan, assemble
from kbuild.targets.image_settings import IMAGE_ROOT, USER_ID, ImageSettings, base_label, check_options, image_settings
from kbuild.targets.protocol import Packaged, Progress, Rendered, Staged
from kbuild.targets.setup_layer import setup_layer
from kbuild.targets.site_layers import LayerCache
from kbuild.verify.artifact_runs import Verification, host_cpu_note
from kbuild.verify.emulation import Qemu, emulated_check, find_qemu
from kbuild.verify.report import StageTimer
from kbuild.verify.sbom import BaseImageRef


def oci_cache() -> Path:
    return cache_dir() / "oci"


def blob_store() -> BlobStore:
    return BlobStore(oci_cache() / "blobs")


def layer_cache(store: BlobStore) -> LayerCache:
    return LayerCache(store, oci_cache() / "layers")


class AssembledTarget:
    """Base of the image and oci targets; `engine` is None where none is used."""

    name = "assembled"
    kind = "image"

    def __init__(self, tag: str | None, base_image: str | None, offline: bool, engine: Engine | None) -> None:
        check_options(tag, base_image)
        self.tag = tag
        self.base_image = base_image
        self.offline = offline
        self.engine = engine
        self.store = blob_store()
        self.assembled: Assembled | None = None

    def render(self, staged: Staged) -> Rendered:
        plan = staged.plan
        settings = image_settings(plan, staged.lock.sha256, self.tag, self.base_image)
        bases = Bases(self.store, oci_cache(), offline=self.offline, engine=self.engine)
        base = bases.resolve(settings.base, plan.spin.os, plan.spin.arch)
        sbom_base = BaseImageRef(
            base_label(settings.base) or "base", base.digest, base.image.platform.get("architecture", "")
        )
        # the deployment names the image by digest, known once it is assembled
        return Rendered(settings=settings, base=base, sbom_base=sbom_base)

    def deploy(
        self, staged: Staged, settings: ImageSettings, described: dict[str, Any], timer: StageTimer
    ) -> list[str]:
        """Write k8s/, kserve/ and run.sh beside the artifact, naming the image by
        digest; their paths for the report."""
        files = render_deployment(staged.plan, settings, staged.measured, described["reference"])
        with timer.stage("deploy"):
            return [str(p.resolve()) for p in write_deployment(staged.output_dir, files)]

    def assemble(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Assembled:
        settings: ImageSettings = rendered.settings
        base: Base = rendered.base
        spin = staged.plan.spin
        cache = layer_cache(self.store)
        python = python_of_version(spin.python)
        if python is None:
            progress(
                f"warning: no Python {spin.python} on this machine: the image's packages carry no bytecode, "
                "so each start compiles them"
            )
        with timer.stage("image"):
            setup = (
                setup_layer(self.engine, self.store, cache, base, settings.setup, progress) if settings.setup else None
            )
            plan = ImagePlan(
                root=IMAGE_ROOT,
                python=settings.python,
                user=f"{USER_ID}:{USER_ID}",
                ports=settings.ports,
                labels=settings.labels,
                os=spin.os,
                arch=spin.arch,
            )
            self.assembled = assemble(
                self.store, cache, plan, base, staged.root, staged.wheels, python, setup, progress
            )
        return self.assembled

    def describe(self, assembled: Assembled, settings: ImageSettings) -> dict[str, Any]:
        image = assembled.image
        repository = settings.tag.rsplit(":", 1)[0] if ":" in settings.tag.rsplit("/", 1)[-1] else settings.tag
        return {
            "tag": settings.tag,
            "id": image.config_descriptor.digest,
            "digest": image.manifest.digest,
            "reference": f"{repository}@{image.manifest.digest}",
            "platform": platform_name(image.platform),
            "assembled": True,
            "base": {
                "name": assembled.base.name,
                "digest": assembled.base.digest,
                "source": assembled.base.source,
                "layers": len(assembled.base.image.layers),
            },
            "layers": [
                {
                    "name": n.name,
                    "digest": n.layer.descriptor.digest,
                    "bytes": n.layer.descriptor.size,
                    "tar_bytes": n.layer.tar_bytes,
                }
                for n in assembled.layers
            ],
            "layers_over_base": len(assembled.layers),
            "bytes_over_base": sum(n.layer.tar_bytes for n in assembled.layers),
            "compressed_bytes_over_base": sum(n.layer.descriptor.size for n in assembled.layers),
        }

    def emulated(self, staged: Staged, timeout: float) -> Verification:
        """`check` under QEMU in the image's root file system."""
        assert self.assembled is not None
        plan, assembled = staged.plan, self.assembled
        reason, note = host_cpu_note(plan)
        if reason:
            return Verification("not verified", f"{reason}; run `check` in the container where it is deployed")
        qemu = find_qemu(plan.spin.arch)
        if not isinstance(qemu, Qemu):
            return Verification("not verified", f"{qemu}; run `check` in the container where it is deployed")
        image = assembled.image
        ours = len(assembled.layers) - (1 if assembled.layers and assembled.layers[0].name == "setup" else 0)
        below = image.layers[: len(image.layers) - ours]
        key = below[-1].digest if below else "empty"
        root = cached_root(self.store, below, oci_cache() / "roots", key)
        config = image.config.get("config") or {}
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        python = find_in_root(root, str(config["Entrypoint"][0]), env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
        if python is None:
            raise BuildError(
                f"the image has no {config['Entrypoint'][0]} on its PATH",
                ["use a base image with the spin's Python (--base-image)"],
            )
        with tempfile.TemporaryDirectory(prefix="kbuild-check-") as tmp:
            extract(self.store, image.layers[len(image.layers) - ours :], Path(tmp))
            app_root = Path(tmp) / IMAGE_ROOT.strip("/")
            run_env = {
                **{str(k): str(v) for k, v in (plan.spin.runtime.get("env") or {}).items()},
                "PYTHONPATH": str(app_root / SITE_DIR),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            return emulated_check(
                qemu,
                root,
                python,
                ["-m", "kbuild.runtime", "--root", str(app_root), "check"],
                run_env,
                plan.spin.arch,
                timeout,
            ).noted(note)

    def push(self, packaged: Packaged, progress: Progress) -> None:
        """Send the image to the registry its tag names; the report's image section says what went."""
        assert self.assembled is not None
        image = self.assembled.image
        tag = packaged.sections["image"]["tag"]
        reference = Reference.parse(tag)
        progress(f"pushing {tag} to {reference.registry}")
        try:
            count = push(self.store, reference, (*image.layers, image.config_descriptor), [], image.manifest, progress)
        except RegistryError as error:
            raise BuildError(f"pushing {tag} failed", [str(error)]) from None
        packaged.sections["image"]["pushed"] = {
            "tag": tag,
            "registry": reference.registry,
            "digest": image.manifest.digest,
            "uploaded_blobs": len(count.uploaded),
            "present_blobs": len(count.present),
        }
