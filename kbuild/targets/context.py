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

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import jinja2

from .. import __version__
from ..errors import SpinError, UsageError
from ..fetch import Wheel
from ..lock import lock_path
from ..plan import Plan
from ..render import BOOTSTRAP, TRANSFORMS_DIR, template_environment

IMAGE_ROOT = "/opt/kbuild"
# Numeric, so that Kubernetes can check runAsNonRoot; the files stay root's.
USER_ID = 10001
DEFAULT_HTTP_PORT = 8080
DEFAULT_GRPC_PORT = 8081
HTTP_PORT_ENV = "KBUILD_HTTP_PORT"
_DEFAULT_EPOCH = 315532800  # 1980-01-01, the same default as the zipapp's

# The app layers of the image, in Dockerfile order: context folder -> the
# folders of app/ it holds. User code changes less often than models do.
APP_LAYERS = (("code", ("code", TRANSFORMS_DIR)), ("models", ("models",)))
_INSTALLER = "kbuild"

# Docker's reference grammar (distribution/reference), without digests for tags.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_NAME = rf"{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG_RE = re.compile(rf"^{_NAME}(?::[\w][\w.-]{{0,127}})?$")
_TAG_CHARS = re.compile(r"[^\w.-]")
_IMAGE_RE = re.compile(rf"^{_NAME}(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$")


@dataclass(frozen=True)
class ImageSettings:
    """What the Dockerfile, the build, the manifests and run.sh agree on."""

    tag: str
    base: str
    python: str  # the image's interpreter, as the spin names it
    python_version: str  # e.g. "3.11"
    arch: str  # the spin's, e.g. x86_64
    setup: tuple[str, ...]
    ports: Mapping[str, int]  # endpoint -> port, for http and grpc
    labels: Mapping[str, str]

    @property
    def http_port(self) -> int | None:
        return self.ports.get("http")

    @property
    def network(self) -> str | None:
        """The build's network: none, unless the spin's setup steps install
        system packages, which only the network has. None means the engine's default."""
        return None if self.setup else "none"


def source_date_epoch() -> int:
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", _DEFAULT_EPOCH)), 0)


def default_tag(plan: Plan) -> str:
    """NAME:VERSION, or NAME:latest; characters a tag cannot hold (e.g. a
    version's +local part) become underscores."""
    version = plan.pipeline.version
    tag = _TAG_CHARS.sub("_", version)[:128] if version else "latest"
    return f"{plan.pipeline.name}:{tag}"


def check_reference(reference: str, *, tag: bool) -> None:
    """UsageError unless `reference` is an image reference Docker accepts
    (a tag to build: [REGISTRY/]NAME[:TAG]; a base image may also pin a digest)."""
    if not (_TAG_RE if tag else _IMAGE_RE).match(reference):
        what = "--tag" if tag else "base image"
        example = "registry.example.com/iris:1.0" if tag else "debian:bookworm or NAME@sha256:DIGEST"
        raise UsageError(f"{what} {reference!r} is not a valid image reference", [f"expected e.g. {example}"])


def image_settings(plan: Plan, lock_sha256: str, tag: str | None, base_image: str | None) -> ImageSettings:
    spin = plan.spin
    tag = tag or default_tag(plan)
    check_reference(tag, tag=True)
    base = base_image or spin.image_base
    check_reference(base, tag=False)
    for step in spin.image_setup:
        if "\n" in step.strip():
            raise SpinError(f"spin {spin.name}: image.setup steps must be one line each (join lines with &&)", [step])
    return ImageSettings(
        tag=tag,
        base=base,
        python=spin.image_python,
        python_version=spin.python,
        arch=spin.arch,
        setup=tuple(s.strip() for s in spin.image_setup),
        ports=_ports(plan),
        labels=_labels(plan, lock_sha256, base),
    )


def _ports(plan: Plan) -> dict[str, int]:
    serve = plan.pipeline.serve
    ports: dict[str, int] = {}
    defaults = {"http": DEFAULT_HTTP_PORT, "grpc": DEFAULT_GRPC_PORT}
    for endpoint, default in defaults.items():
        config = serve.get(endpoint)
        if isinstance(config, Mapping):
            ports[endpoint] = int(config.get("port", default))
    # with no endpoint at all the runtime serves HTTP on its default port
    if not any(serve.get(e) is not None for e in ("http", "grpc", "kafka")):
        ports["http"] = DEFAULT_HTTP_PORT
    return ports


def _labels(plan: Plan, lock_sha256: str, base: str) -> dict[str, str]:
    pipeline, spin = plan.pipeline, plan.spin
    labels = {
        "org.opencontainers.image.title": pipeline.name,
        "org.opencontainers.image.description": f"inference pipeline {pipeline.name} compiled by kbuild for {spin.name}",
        "org.opencontainers.image.base.name": base,
        "kbuild.version": __version__,
        "kbuild.spin": spin.name,
        "kbuild.lock.sha256": lock_sha256,
        "kbuild.pipeline.name": pipeline.name,
        "kbuild.pipeline.version": pipeline.version or "",
    }
    if pipeline.version:
        labels["org.opencontainers.image.version"] = pipeline.version
    # only a date the user pinned: the build's own clock would break reproducibility
    if "SOURCE_DATE_EPOCH" in os.environ:
        created = datetime.fromtimestamp(source_date_epoch(), tz=timezone.utc)
        labels["org.opencontainers.image.created"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dict(sorted(labels.items()))


def _dockerfile_string(value: Any) -> str:
    """A double-quoted Dockerfile word: no variable expansion, no line breaks."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + " ".join(text.splitlines()) + '"'


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def environment() -> jinja2.Environment:
    """The sandboxed, StrictUndefined environment of kbuild's templates, with
    the quoting filters that container files need."""
    env = template_environment()
    env.filters["json"] = _json
    env.filters["dq"] = _dockerfile_string
    return env


def _app_layers(root: Path) -> list[tuple[str, list[str]]]:
    """(context folder, the folders of app/ in it) of each app layer this root has, in order."""
    found = [(folder, [n for n in names if (root / "app" / n).exists()]) for folder, names in APP_LAYERS]
    return [(folder, names) for folder, names in found if names]


def render_dockerfile(settings: ImageSettings, plan: Plan, root: Path) -> str:
    env = environment()
    healthcheck = None
    if settings.http_port is not None:
        code = env.get_template("image/healthcheck.py.j2").render(
            port_env=HTTP_PORT_ENV, pipeline_json=f"{IMAGE_ROOT}/app/pipeline.json", default_port=DEFAULT_HTTP_PORT
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
    return environment().get_template("image/install_wheels.py.j2").render(
        here=f"/tmp/{_INSTALLER}",
        wheels=f"/tmp/{_INSTALLER}/wheels",
        site=f"{IMAGE_ROOT}/site",
        python_version=settings.python_version,
        arch=settings.arch,
        spin=plan.spin.name,
        epoch=source_date_epoch(),
    )


Entry = tuple[str, Path | bytes]


def context_entries(settings: ImageSettings, plan: Plan, root: Path, wheels: list[Wheel]) -> list[Entry]:
    """Every file of the context: (name in the tarball, source file or contents)."""
    entries: list[Entry] = [
        ("Dockerfile", render_dockerfile(settings, plan, root).encode()),
        # what wheels/ was fetched from, for whoever builds or audits the context;
        # the Dockerfile does not copy it, so it changes no layer
        ("requirements.lock", lock_path(plan)),
        (f"{_INSTALLER}/bootstrap.py", BOOTSTRAP),
        (f"{_INSTALLER}/install_wheels.py", _installer(settings, plan).encode()),
    ]
    entries += [(f"wheels/{w.path.name}", w.path) for w in wheels]
    entries += _tree("site", root / "site")
    app = root / "app"
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
    """A tarball whose bytes depend on the entries only."""
    mtime = source_date_epoch()
    folders = {"/".join(name.split("/")[:i]) for name, _ in entries for i in range(1, name.count("/") + 1)}
    # wheels/ always exists: the Dockerfile copies it even when nothing is locked
    folders.add("wheels")
    rows: list[tuple[str, Path | bytes | None]] = [(f, None) for f in folders]
    rows += entries
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, source in sorted(rows, key=lambda row: row[0]):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if source is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.mode = 0o644
            if isinstance(source, bytes):
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
            else:
                info.size = source.stat().st_size
                with source.open("rb") as data:
                    tar.addfile(info, data)


def write_context(dest: Path, settings: ImageSettings, plan: Plan, root: Path, wheels: list[Wheel]) -> None:
    entries = context_entries(settings, plan, root, wheels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as out:
        write_tar(out, entries)
    os.replace(tmp, dest)
