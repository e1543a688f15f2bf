"""Assemble an artifact's image: the base's layers, the spin's setup layer,
then kbuild's, from what changes least to what changes most:

    packages (one layer per large wheel, then the rest)
    runtime  (kbuild's modules, site/)
    code     (app/code, app/transforms)
    models   (app/models)
    config   (the rest of app/, and sbom.cdx.json)

The image's configuration is the base's, with kbuild's entry point, user,
environment, ports, health check and labels, as the Dockerfile route writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbuild.oci.blobs import BlobStore
from kbuild.oci.image import Image, oci_platform, store_image
from kbuild.oci.layers import FileEntry, Layer, layer_epoch, tree_entries
from kbuild.render.artifact_root import template_environment
from kbuild.resolve.fetch import Wheel
from kbuild.runtime.contract.layout import (
    APP_DIR,
    PIPELINE_FILE,
    SBOM_FILE,
    SITE_DIR,
)
from kbuild.runtime.contract.serve import DEFAULT_HTTP_PORT, HTTP_PORT_ENV
from kbuild.targets.base_images import Base
from kbuild.targets.image_settings import APP_LAYERS
from kbuild.targets.site_layers import LayerCache, NamedLayer, files_layer, package_layers, runtime_layer

ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
_SECOND_NS = 1_000_000_000
HEALTHCHECK_TIMING = {
    "Interval": 10 * _SECOND_NS,
    "Timeout": 5 * _SECOND_NS,
    "StartPeriod": 60 * _SECOND_NS,
    "Retries": 3,
}


@dataclass(frozen=True)
class ImagePlan:
    """What the image's configuration says, from the image settings."""

    root: str  # /opt/kbuild
    python: str  # the image's interpreter, e.g. python3
    user: str  # UID:GID
    ports: Mapping[str, int]
    labels: Mapping[str, str]
    os: str
    arch: str  # the spin's


@dataclass(frozen=True)
class Assembled:
    image: Image
    base: Base
    layers: list[NamedLayer]  # kbuild's own (and the setup layer), in order


def healthcheck(plan: ImagePlan) -> dict[str, Any]:
    if plan.ports.get("http") is None:
        return {"Test": ["NONE"]}
    code = (
        template_environment()
        .get_template("image/healthcheck.py.j2")
        .render(
            port_env=HTTP_PORT_ENV,
            pipeline_json=f"{plan.root}/{APP_DIR}/{PIPELINE_FILE}",
            default_port=DEFAULT_HTTP_PORT,
        )
    )
    return {"Test": ["CMD", plan.python, "-I", "-c", code], **HEALTHCHECK_TIMING}


def _env(base_env: Sequence[str], root: str) -> list[str]:
    merged: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update({"PYTHONPATH": f"{root}/site", **ENV})
    return [f"{k}={v}" for k, v in merged.items()]


def image_config(plan: ImagePlan, base: Base, diff_ids: list[str], history: list[dict[str, Any]]) -> dict[str, Any]:
    base_config: Mapping[str, Any] = base.image.config
    inherited = dict(base_config.get("config") or {})
    exposed = dict(inherited.get("ExposedPorts") or {})
    exposed.update({f"{port}/tcp": {} for port in plan.ports.values()})
    labels = {**(inherited.get("Labels") or {}), **plan.labels, "org.opencontainers.image.base.digest": base.digest}
    config = {
        **{
            k: v
            for k, v in inherited.items()
            if k not in ("Cmd", "Entrypoint", "Healthcheck", "User", "Env", "ExposedPorts", "Labels", "OnBuild")
        },
        "Cmd": ["serve"],
        "Entrypoint": [plan.python, "-m", "kbuild.runtime", "--root", plan.root],
        "Env": _env(inherited.get("Env") or [], plan.root),
        "Healthcheck": healthcheck(plan),
        "Labels": dict(sorted(labels.items())),
        "User": plan.user,
        **({"ExposedPorts": dict(sorted(exposed.items()))} if exposed else {}),
    }
    created = _created()
    return {
        "architecture": oci_platform(plan.os, plan.arch)["architecture"],
        **(
            {"variant": oci_platform(plan.os, plan.arch)["variant"]}
            if "variant" in oci_platform(plan.os, plan.arch)
            else {}
        ),
        "os": plan.os,
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }


def _created() -> str:
    return datetime.fromtimestamp(layer_epoch(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _base_history(base: Base) -> list[dict[str, Any]]:
    history = list(base.image.config.get("history") or [])
    filled = sum(1 for h in history if not h.get("empty_layer"))
    if filled != len(base.image.layers):  # a base without (or with broken) history: one line per layer
        history = [{"created_by": f"base layer {i + 1} of {base.name}"} for i in range(len(base.image.layers))]
    return history


def app_entries(root: Path, image_root: str) -> dict[str, list[FileEntry]]:
    """The root's app/ as the code, models and config layers' files, and the SBOM beside app/."""
    prefix = image_root.strip("/")
    app = root / APP_DIR
    layered: set[Path] = set()
    found: dict[str, list[FileEntry]] = {}
    for layer, names in APP_LAYERS:
        entries = []
        for name in names:
            if (app / name).exists():
                layered.add(app / name)
                entries += tree_entries(f"{prefix}/app/{name}", app / name)
        if entries:
            found[layer] = entries
    config = []
    for path in sorted(app.iterdir()):
        if path in layered:
            continue
        config += (
            tree_entries(f"{prefix}/app/{path.name}", path)
            if path.is_dir()
            else [FileEntry.from_file(f"{prefix}/app/{path.name}", path)]
        )
    if (root / SBOM_FILE).is_file():
        config.append(FileEntry.from_file(f"{prefix}/{SBOM_FILE}", root / SBOM_FILE))
    found["config"] = config
    return found


def assemble(
    store: BlobStore,
    cache: LayerCache,
    plan: ImagePlan,
    base: Base,
    root: Path,
    wheels: Sequence[Wheel],
    bytecode_python: str | None,
    setup: NamedLayer | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Assembled:
    site_path = f"{plan.root}/site"
    ours: list[NamedLayer] = [setup] if setup else []
    ours += package_layers(cache, wheels, site_path, bytecode_python)
    ours.append(runtime_layer(cache, root / SITE_DIR, site_path, bytecode_python))
    for name, entries in app_entries(root, plan.root).items():
        ours.append(files_layer(cache, name, entries))
    history = _base_history(base) + [
        {"created": _created(), "created_by": f"kbuild: {layer.name}", "comment": "kbuild"} for layer in ours
    ]
    layers: list[Layer] = [n.layer for n in ours]
    diff_ids = [*base.image.diff_ids, *(layer.diff_id for layer in layers)]
    config = image_config(plan, base, diff_ids, history)
    annotations = {"org.opencontainers.image.base.digest": base.digest}
    if "org.opencontainers.image.base.name" in plan.labels:
        annotations["org.opencontainers.image.base.name"] = plan.labels["org.opencontainers.image.base.name"]
    image = store_image(store, config, (*base.image.layers, *(layer.descriptor for layer in layers)), annotations)
    for named in ours:
        progress(f"layer {named.name}: {named.layer.descriptor.digest[:19]} ({named.layer.descriptor.size} bytes)")
    return Assembled(image, base, ours)
