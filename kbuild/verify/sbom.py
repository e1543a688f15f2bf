"""The artifact's software bill of materials: CycloneDX 1.6 JSON.

Lists each locked package (version, pkg:pypi purl, the wheel's sha256), each
model (a machine-learning-model component with its sha256), the kbuild runtime
and, for images, the base image by digest (pkg:oci purl). The same inputs give
the same bytes: the serial number is derived from the content and the time is
SOURCE_DATE_EPOCH (default 0).
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from kbuild import __version__
from kbuild.oci.layers import layer_epoch
from kbuild.plan.pipeline_plan import Plan
from kbuild.resolve.fetch import Wheel
from kbuild.runtime.contract.layout import APP_DIR, SBOM_FILE, SITE_DIR, model_path

_NAMESPACE = uuid.UUID("6f0c5b54-3f0e-4c43-9a53-6b1c1b0f7a11")  # kbuild's, for serial numbers


@dataclass(frozen=True)
class BaseImageRef:
    """The base image as the SBOM names it."""

    name: str  # repository, e.g. docker.io/library/python, or what the user gave
    digest: str | None  # the platform manifest's, sha256:...
    arch: str  # OCI architecture, e.g. amd64


def _sha256(value: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=value)]


def _tree_sha256(files: Sequence[Path], top: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(top).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def model_sha256(root: Path, step: str, name: str) -> str:
    """A model file's sha256, or for a model folder the hash of its files' names and hashes."""
    path = root / APP_DIR / model_path(step, name)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return _tree_sha256([p for p in path.rglob("*") if p.is_file()], path)


def _base_component(base: BaseImageRef) -> Component:
    name = base.name.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0] or "base"
    qualifiers = {"arch": base.arch}
    if "/" in base.name:
        qualifiers["repository_url"] = (
            base.name.split("@", 1)[0].rsplit(":", 1)[0] if base.name.count(":") else base.name
        )
    purl = PackageURL("oci", None, name, base.digest, qualifiers) if base.digest else None
    return Component(
        name=base.name,
        version=base.digest,
        type=ComponentType.CONTAINER,
        bom_ref=f"base:{base.digest or base.name}",
        purl=purl,
        hashes=_sha256(base.digest.split(":", 1)[1]) if base.digest else [],
        description="the base image the artifact's layers sit on",
    )


def make_sbom(plan: Plan, wheels: Sequence[Wheel], root: Path, target: str, base: BaseImageRef | None) -> str:
    """The SBOM's JSON text."""
    pipeline = plan.pipeline
    runtime_files = [p for p in (root / SITE_DIR).rglob("*") if p.is_file()]
    components = [
        Component(
            name=w.package.name,
            version=w.package.version,
            type=ComponentType.LIBRARY,
            bom_ref=f"pkg:pypi/{w.package.name}@{w.package.version}",
            purl=PackageURL("pypi", None, w.package.name, w.package.version),
            hashes=_sha256(w.sha256),
            properties=[Property(name="kbuild:wheel", value=w.path.name)],
        )
        for w in sorted(wheels, key=lambda w: w.package.name)
    ]
    components += [
        Component(
            name=f"{p.step.name}/{p.step.model.name}",
            type=ComponentType.MACHINE_LEARNING_MODEL,
            bom_ref=f"model:{p.step.name}",
            hashes=_sha256(model_sha256(root, p.step.name, p.step.model.name)),
            properties=[
                Property(name="kbuild:step-type", value=p.step.type),
                Property(name="kbuild:device", value=p.backend.device),
            ],
        )
        for p in plan.steps
        if p.step.model is not None
    ]
    components.append(
        Component(
            name="kbuild-runtime",
            version=__version__,
            type=ComponentType.FRAMEWORK,
            bom_ref="kbuild-runtime",
            hashes=_sha256(_tree_sha256(runtime_files, root / SITE_DIR)),
            description="the kbuild serving runtime modules this pipeline uses",
        )
    )
    if base is not None:
        components.append(_base_component(base))
    app = Component(
        name=pipeline.name,
        version=pipeline.version or None,
        type=ComponentType.APPLICATION,
        bom_ref=f"pipeline:{pipeline.name}",
        properties=[Property(name="kbuild:spin", value=plan.spin.name), Property(name="kbuild:target", value=target)],
    )
    content = json.dumps(
        [
            pipeline.name,
            pipeline.version,
            plan.spin.name,
            target,
            [(w.package.name, w.package.version, w.sha256) for w in wheels],
            [(c.bom_ref.value, [h.content for h in c.hashes]) for c in components],
            base and (base.name, base.digest, base.arch),
            _tree_sha256(runtime_files, root / SITE_DIR),
        ],
        sort_keys=True,
    )
    bom = Bom(
        serial_number=uuid.uuid5(_NAMESPACE, content),
        metadata=BomMetaData(timestamp=datetime.fromtimestamp(layer_epoch(), tz=UTC), component=app),
        components=components,
    )
    bom.register_dependency(app, components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's advice on graph completeness
        text = JsonV1Dot6(bom).output_as_string(indent=2)
    return text + "\n"


def write_sbom(plan: Plan, wheels: Sequence[Wheel], root: Path, target: str, base: BaseImageRef | None) -> str:
    text = make_sbom(plan, wheels, root, target, base)
    (root / SBOM_FILE).write_text(text, encoding="utf-8")
    return text
