"""The image target: the assembled image loaded into the engine through the
Docker SDK and tagged (no Dockerfile, no build step in the engine), checked in
a container where the engine's machine runs the spin, pushed through the
registry API (engine or not)."""

from __future__ import annotations

import docker.errors

from kbuild.errors import BuildError
from kbuild.oci.layout import write_layout
from kbuild.targets.assembled_targets import AssembledTarget
from kbuild.targets.engine import Engine, api_error, one_line
from kbuild.targets.image_check import check_image, runs_here
from kbuild.targets.image_settings import ImageSettings
from kbuild.targets.protocol import Packaged, Progress, Rendered, Staged
from kbuild.verify.artifact_runs import Verification
from kbuild.verify.report import StageTimer


def load_image(engine: Engine, archive_path: str, tag: str) -> str:
    """Load a docker-loadable archive; the engine's ID for `tag`."""
    api = engine.client.api
    try:
        with open(archive_path, "rb") as data:
            api.load_image(data)
        return str(api.inspect_image(tag)["Id"])
    except docker.errors.APIError as error:
        raise BuildError(f"the Docker engine at {engine.address} refused the image", [api_error(error)]) from None
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError(
            f"lost the Docker engine at {engine.address} while loading the image", [one_line(error)]
        ) from None


class ImageTarget(AssembledTarget):
    name = "image"

    def __init__(self, tag: str | None, base_image: str | None, offline: bool, engine: Engine) -> None:
        super().__init__(tag, base_image, offline, engine)
        self.engine_used = engine

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged:
        settings: ImageSettings = rendered.settings
        assembled = self.assemble(staged, rendered, timer, progress)
        image = assembled.image
        with timer.stage("load"):
            archive = staged.scratch / "image.tar"
            write_layout(archive, self.store, image.manifest, list(image.blobs), settings.tag, image)
            loaded_id = load_image(self.engine_used, str(archive), settings.tag)
        described = {
            **self.describe(assembled, settings),
            "id": loaded_id,
            "engine": {"address": self.engine_used.address, "version": self.engine_used.version},
        }
        deployment = self.deploy(staged, settings, described, timer)
        progress(f"loaded image {settings.tag} ({loaded_id}, {len(assembled.layers)} layers over the base)")
        return Packaged(
            settings.tag,
            {"image": settings.tag, "id": loaded_id, "digest": image.manifest.digest},
            {"image": described, "deployment": deployment},
        )

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification:
        if runs_here(self.engine_used, staged.plan.spin) is None:
            return check_image(self.engine_used, packaged.sections["image"]["id"], staged.plan.spin, timeout)
        return self.emulated(staged, timeout)
