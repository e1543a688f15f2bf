"""The oci target: NAME-VERSION-SPIN.oci.tar, an OCI image layout in one tar
(`skopeo copy oci-archive:...`, podman, and `docker load` read it), assembled
with no engine; --push sends it through the registry API."""

from __future__ import annotations

from kbuild.oci.layout import write_layout
from kbuild.targets.assembled_targets import AssembledTarget
from kbuild.targets.engine import Engine
from kbuild.targets.image_check import check_image, runs_here
from kbuild.targets.protocol import Packaged, Progress, Rendered, Staged, file_artifact
from kbuild.verify.artifact_runs import Verification
from kbuild.verify.report import StageTimer


class OciTarget(AssembledTarget):
    name = "oci"

    def __init__(
        self, tag: str | None, base_image: str | None, offline: bool, engine: Engine | None, member: bool = False
    ) -> None:
        super().__init__(tag, base_image, offline, engine)
        self.member = member  # one platform of an index: assembled into the store, written by the index build

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged:
        assembled = self.assemble(staged, rendered, timer, progress)
        image = assembled.image
        described = self.describe(assembled, rendered.settings)
        sections = {"image": described, "deployment": self.deploy(staged, rendered.settings, described, timer)}
        if self.member:  # the index build writes the archive
            return Packaged(image.manifest.digest, {"digest": image.manifest.digest}, sections)
        artifact = staged.output_dir / f"{staged.name}.oci.tar"
        with timer.stage("package"):
            write_layout(artifact, self.store, image.manifest, list(image.blobs), rendered.settings.tag, image)
        progress(f"wrote {artifact} ({image.manifest.digest})")
        return Packaged(str(artifact), {**file_artifact(artifact), "digest": image.manifest.digest}, sections)

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification:
        if self.engine is not None and runs_here(self.engine, staged.plan.spin) is None:
            return self._in_engine(packaged, staged, timeout)
        return self.emulated(staged, timeout)

    def _in_engine(self, packaged: Packaged, staged: Staged, timeout: float) -> Verification:
        """Load the archive (untagged) into the engine, check it, and take it out again if it was not there."""
        import docker.errors

        assert self.engine is not None and self.assembled is not None
        api = self.engine.client.api
        image = self.assembled.image
        image_id = image.config_descriptor.digest
        try:
            api.inspect_image(image_id)
            present = True
        except docker.errors.ImageNotFound:
            present = False
        if not present:
            untagged = staged.scratch / "check.tar"
            write_layout(untagged, self.store, image.manifest, list(image.blobs), None, image)
            with untagged.open("rb") as data:
                api.load_image(data)
        try:
            return check_image(self.engine, image_id, staged.plan.spin, timeout)
        finally:
            if not present:
                try:
                    api.remove_image(image_id, force=False)
                except docker.errors.DockerException:
                    pass
