"""What the Dockerfile, the image, the manifests and run.sh agree on: the
image's name, base, interpreter, ports, labels and user."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from kbuild import __version__
from kbuild.errors import SpinError, UsageError
from kbuild.plan.pipeline_plan import Plan
from kbuild.runtime.contract.layout import CODE_DIR, MODELS_DIR, TRANSFORMS_DIR
from kbuild.targets.base_images import LOCAL_TRANSPORTS, split_name

IMAGE_ROOT = "/opt/kbuild"
# The app layers of an image, least changing first: layer (and build-context
# folder) -> the folders of app/ it holds. User code changes less often than
# models do. The Dockerfile route and the assembled image split app/ alike.
APP_LAYERS = (("code", (CODE_DIR, TRANSFORMS_DIR)), ("models", (MODELS_DIR,)))
# Numeric, so that Kubernetes can check runAsNonRoot; the files stay root's.
USER_ID = 10001
_DEFAULT_EPOCH = 315532800  # 1980-01-01, the same default as the zipapp's

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
    def network(self) -> str:
        """The build's network: none, unless setup commands install system
        packages; then the host's, which reaches the package mirrors on every
        engine, those started without a bridge (CI, sandboxes) included."""
        return "host" if self.setup else "none"


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
    (a tag to build: [REGISTRY/]NAME[:TAG]; a base image may also pin a digest,
    or be named with a skopeo transport: oci-archive:PATH, docker://REF, ...)."""
    if not tag:
        transport, rest = split_name(reference)
        if transport in LOCAL_TRANSPORTS:
            return
        reference = rest
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
    setup = image_setup(plan)
    for step in setup:
        if "\n" in step:
            raise SpinError(f"spin {spin.name}: setup steps must be one line each (join lines with &&)", [step])
    return ImageSettings(
        tag=tag,
        base=base,
        python=spin.image_python,
        python_version=spin.python,
        arch=spin.arch,
        setup=setup,
        ports=_ports(plan),
        labels=_labels(plan, lock_sha256, base),
    )


def image_setup(plan: Plan) -> tuple[str, ...]:
    """The spin's image.setup, then the setup of each backend the pipeline uses
    (by step type), each command once: only images that need a system library install it."""
    steps = [*plan.spin.image_setup]
    for step_type in plan.step_types:
        steps += plan.spin.backends[step_type].setup
    return tuple(dict.fromkeys(s.strip() for s in steps))


def _ports(plan: Plan) -> dict[str, int]:
    return plan.pipeline.settings.service_ports


def base_label(base: str) -> str | None:
    """The base's name as the image records it: a registry reference, never a
    local path (the same image must not differ by where its base archive lay)."""
    transport, rest = split_name(base)
    return None if transport in LOCAL_TRANSPORTS else rest


def _labels(plan: Plan, lock_sha256: str, base: str) -> dict[str, str]:
    pipeline, spin = plan.pipeline, plan.spin
    labels = {
        "org.opencontainers.image.title": pipeline.name,
        "org.opencontainers.image.description": f"inference pipeline {pipeline.name} compiled by kbuild for {spin.name}",
        "kbuild.version": __version__,
        "kbuild.spin": spin.name,
        "kbuild.lock.sha256": lock_sha256,
        "kbuild.pipeline.name": pipeline.name,
        "kbuild.pipeline.version": pipeline.version or "",
    }
    if base_label(base):
        labels["org.opencontainers.image.base.name"] = str(base_label(base))
    if pipeline.version:
        labels["org.opencontainers.image.version"] = pipeline.version
    # only a date the user pinned: the build's own clock would break reproducibility
    if "SOURCE_DATE_EPOCH" in os.environ:
        created = datetime.fromtimestamp(source_date_epoch(), tz=UTC)
        labels["org.opencontainers.image.created"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dict(sorted(labels.items()))


def check_options(tag: str | None, base_image: str | None) -> None:
    """UsageError for a --tag or --base-image that no engine would accept."""
    for value in (tag, base_image):
        if value is not None:
            check_reference(value, tag=value == tag)
