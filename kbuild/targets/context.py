"""The Docker build context: a Dockerfile and the files it copies, as one tarball.

The image target builds from this same tarball, so `docker build - < context.tar`
with any builder gives the image kbuild would have built. Entries are sorted and
their owners, modes and timestamps fixed (SOURCE_DATE_EPOCH), so the same inputs
give the same bytes.

Layout inside the tarball, one folder per Dockerfile layer, from what changes
least to what changes most:

    Dockerfile
    requirements.lock  the hash-pinned lock the wheels come from (not copied)
    kbuild/      the wheel installer (bootstrap.py from the runtime, plus a driver)
    wheels/      the locked wheels, unpacked by the installer in a separate stage
    site/        the kbuild runtime modules           -> ROOT/site/
    code/        user code: code/, transforms/ of app/ -> ROOT/app/
    models/      models/ of app/                       -> ROOT/app/
    config/      everything else in app/               -> ROOT/app/
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from kbuild import __version__
from kbuild.errors import UsageError
from kbuild.oci.layers import FileEntry
from kbuild.oci.layers import write_tar as write_layer_tar
from kbuild.plan.pipeline_plan import Plan
from kbuild.render.artifact_root import BOOTSTRAP, template_environment
from kbuild.resolve.fetch import Wheel
from kbuild.resolve.lock import lock_path
from kbuild.runtime.contract.layout import (
    APP_DIR,
    PIPELINE_FILE,
    SBOM_FILE,
    SITE_DIR,
)
from kbuild.runtime.contract.serve import DEFAULT_HTTP_PORT, HTTP_PORT_ENV
from kbuild.targets.base_images import LOCAL_TRANSPORTS, split_name
from kbuild.targets.deploy import render_deployment, write_deployment
from kbuild.targets.engine import DOCKER_ARCH
from kbuild.targets.image_settings import (
    APP_LAYERS,
    IMAGE_ROOT,
    USER_ID,
    ImageSettings,
    check_options,
    image_settings,
    source_date_epoch,
)
from kbuild.targets.protocol import Packaged, Progress, Rendered, Staged, file_artifact
from kbuild.verify.artifact_runs import Verification
from kbuild.verify.report import StageTimer
from kbuild.verify.sbom import BaseImageRef

_INSTALLER = "kbuild"


def _app_layers(root: Path) -> list[tuple[str, list[str]]]:
    """(context folder, the folders of app/ in it) of each app layer this root has, in order."""
    found = [(folder, [n for n in names if (root / APP_DIR / n).exists()]) for folder, names in APP_LAYERS]
    return [(folder, names) for folder, names in found if names]


def render_dockerfile(settings: ImageSettings, plan: Plan, root: Path) -> str:
    env = template_environment()
    healthcheck = None
    if settings.http_port is not None:
        code = env.get_template("image/healthcheck.py.j2").render(
            port_env=HTTP_PORT_ENV,
            pipeline_json=f"{IMAGE_ROOT}/{APP_DIR}/{PIPELINE_FILE}",
            default_port=DEFAULT_HTTP_PORT,
        )
        healthcheck = [settings.python, "-I", "-c", code]
    return env.get_template("Dockerfile.j2").render(
        kbuild_version=__version__,
        name=plan.pipeline.name,
        version=plan.pipeline.version or "",
        spin=plan.spin.name,
        settings=settings,
        root=IMAGE_ROOT,
        user=f"{USER_ID}:{USER_ID}",
        installer=f"/tmp/{_INSTALLER}",
        app_layers=[folder for folder, _ in _app_layers(root)],
        healthcheck=healthcheck,
    )


def _installer(settings: ImageSettings, plan: Plan) -> str:
    return (
        template_environment()
        .get_template("image/install_wheels.py.j2")
        .render(
            here=f"/tmp/{_INSTALLER}",
            wheels=f"/tmp/{_INSTALLER}/wheels",
            site=f"{IMAGE_ROOT}/site",
            python_version=settings.python_version,
            arch=settings.arch,
            spin=plan.spin.name,
            epoch=source_date_epoch(),
        )
    )


Entry = tuple[str, Path | bytes]


def render_container_files(settings: ImageSettings, plan: Plan, root: Path) -> dict[str, str]:
    """The context's generated files: name in the tarball -> text."""
    return {
        "Dockerfile": render_dockerfile(settings, plan, root),
        f"{_INSTALLER}/install_wheels.py": _installer(settings, plan),
    }


def context_entries(rendered: Mapping[str, str], plan: Plan, root: Path, wheels: list[Wheel]) -> list[Entry]:
    """Every file of the context: (name in the tarball, source file or contents)."""
    entries: list[Entry] = [(name, text.encode()) for name, text in rendered.items()]
    entries += [
        # what wheels/ was fetched from, for whoever builds or audits the context;
        # the Dockerfile does not copy it, so it changes no layer
        ("requirements.lock", lock_path(plan)),
        (f"{_INSTALLER}/bootstrap.py", BOOTSTRAP),
    ]
    entries += [(f"wheels/{w.path.name}", w.path) for w in wheels]
    entries.append((SBOM_FILE, root / SBOM_FILE))
    entries += _tree(SITE_DIR, root / SITE_DIR)
    app = root / APP_DIR
    for folder, names in _app_layers(root):
        for name in names:
            entries += _tree(f"{folder}/{name}", app / name)
    layered = {app / name for _, names in APP_LAYERS for name in names}
    for path in sorted(app.iterdir()):
        if path not in layered:
            entries += _tree(f"config/{path.name}", path) if path.is_dir() else [(f"config/{path.name}", path)]
    return entries


def _tree(prefix: str, folder: Path) -> list[Entry]:
    return [(f"{prefix}/{p.relative_to(folder).as_posix()}", p) for p in folder.rglob("*") if p.is_file()]


def write_tar(out: BinaryIO, entries: list[Entry]) -> None:
    """A tarball whose bytes depend on the entries only; wheels/ always exists:
    the Dockerfile copies it even when nothing is locked."""
    files = [FileEntry(name, source) for name, source in entries]  # 0644: a context holds no programs
    write_layer_tar(out, files, mtime=source_date_epoch(), folders=("wheels",))


def write_context(dest: Path, rendered: Mapping[str, str], plan: Plan, root: Path, wheels: list[Wheel]) -> None:
    entries = context_entries(rendered, plan, root, wheels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as out:
        write_tar(out, entries)
    os.replace(tmp, dest)


class ContextTarget:
    """NAME-VERSION-SPIN.context.tar for builders of their own, with k8s/ and run.sh."""

    name = "context"
    kind = "context"

    def __init__(self, tag: str | None, base_image: str | None) -> None:
        check_options(tag, base_image)
        self.tag = tag
        self.base_image = base_image

    def render(self, staged: Staged) -> Rendered:
        return render_image_files(staged, self.tag, self.base_image)

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged:
        artifact = staged.output_dir / f"{staged.name}.context.tar"
        with timer.stage("package"):
            write_context(artifact, rendered.container, staged.plan, staged.root, staged.wheels)
        with timer.stage("deploy"):
            deployment = write_deployment(staged.output_dir, rendered.deployment)
        progress(f"wrote {artifact}")
        return Packaged(str(artifact), file_artifact(artifact), {"deployment": [str(p.resolve()) for p in deployment]})

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification:
        return Verification("not verified", "a build context is verified where it is built: run `check` in the image")

    def push(self, packaged: Packaged, progress: Progress) -> None:
        raise AssertionError("a build context is not pushed")


def render_image_files(staged: Staged, tag: str | None, base_image: str | None) -> Rendered:
    """What the context target renders: the context's files and the deployment's.
    A Dockerfile starts FROM an image a builder can pull or has: a registry
    reference (docker://REF or REF) or an engine's image (docker-daemon:NAME)."""
    plan = staged.plan
    if base_image is not None:
        transport, rest = split_name(base_image)
        if transport in LOCAL_TRANSPORTS:
            raise UsageError(
                f"--target context: a Dockerfile cannot start FROM {base_image}",
                ["name the base by registry reference, or use --target oci or image"],
            )
        base_image = rest
    settings = image_settings(plan, staged.lock.sha256, tag, base_image)
    return Rendered(
        container=render_container_files(settings, plan, staged.root),
        deployment=render_deployment(plan, settings, staged.measured),
        settings=settings,
        sbom_base=BaseImageRef(settings.base, None, DOCKER_ARCH.get(settings.arch, settings.arch)),
    )
