"""An image as kbuild holds it: its manifest, config and layers, all blobs in
the store; and the platform names OCI and the spins use for the same machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kbuild.oci.blobs import (
    CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    INDEX,
    LAYER_GZIP,
    LAYER_TAR,
    MANIFEST,
    BlobStore,
    Descriptor,
)

# spin arch -> (OCI architecture, variant)
_OCI_ARCH = {"x86_64": ("amd64", ""), "aarch64": ("arm64", "v8"), "ppc64le": ("ppc64le", ""), "s390x": ("s390x", "")}
_SPIN_ARCH = {oci: spin for spin, (oci, _) in _OCI_ARCH.items()}
_OCI_LAYER = {DOCKER_LAYER_GZIP: LAYER_GZIP, DOCKER_LAYER_TAR: LAYER_TAR}


def oci_platform(os_name: str, arch: str) -> dict[str, str]:
    """The OCI platform of a spin's os and arch (x86_64 -> linux/amd64)."""
    oci, variant = _OCI_ARCH.get(arch, (arch, ""))
    return {"os": os_name, "architecture": oci, **({"variant": variant} if variant else {})}


def spin_arch(oci_arch: str) -> str:
    return _SPIN_ARCH.get(oci_arch, oci_arch)


def platform_name(platform: Mapping[str, str]) -> str:
    variant = platform.get("variant")
    return f"{platform.get('os', '?')}/{platform.get('architecture', '?')}" + (f"/{variant}" if variant else "")


@dataclass(frozen=True)
class Image:
    """One platform's image: a manifest and what it names."""

    manifest: Descriptor
    config: Mapping[str, Any]
    config_descriptor: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    @property
    def platform(self) -> dict[str, str]:
        found = {"os": str(self.config.get("os", "linux")), "architecture": str(self.config.get("architecture", ""))}
        if self.config.get("variant"):
            found["variant"] = str(self.config["variant"])
        return found

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (*self.layers, self.config_descriptor, self.manifest)


def store_image(
    store: BlobStore,
    config: Mapping[str, Any],
    layers: tuple[Descriptor, ...],
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """Write the config and the manifest naming `layers` (already in the store)."""
    config_descriptor, _ = store.put_json(config, CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_descriptor.as_dict(),
        "layers": [Descriptor(_OCI_LAYER.get(d.media_type, d.media_type), d.digest, d.size).as_dict() for d in layers],
        **({"annotations": dict(sorted(annotations.items()))} if annotations else {}),
    }
    descriptor, _ = store.put_json(manifest, MANIFEST)
    platform = {"os": str(config.get("os", "linux")), "architecture": str(config.get("architecture", ""))}
    if config.get("variant"):
        platform["variant"] = str(config["variant"])
    diff_ids = tuple(str(d) for d in config["rootfs"]["diff_ids"])
    return Image(
        Descriptor(MANIFEST, descriptor.digest, descriptor.size, platform), config, config_descriptor, layers, diff_ids
    )


def store_index(store: BlobStore, images: list[Image]) -> Descriptor:
    """An image index of several platforms' manifests, in the order given."""
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [i.manifest.as_dict() for i in images]}
    descriptor, _ = store.put_json(index, INDEX)
    return descriptor


def load_image(store: BlobStore, manifest: Descriptor) -> Image:
    """The image a manifest in the store names (its blobs must be there too)."""
    import json

    data = json.loads(store.read(manifest.digest))
    config_descriptor = Descriptor.from_dict(data["config"])
    config = json.loads(store.read(config_descriptor.digest))
    layers = tuple(Descriptor.from_dict(layer) for layer in data.get("layers") or [])
    diff_ids = tuple(str(d) for d in config.get("rootfs", {}).get("diff_ids") or [])
    platform = manifest.platform or {
        "os": str(config.get("os", "linux")),
        "architecture": str(config.get("architecture", "")),
    }
    return Image(
        Descriptor(manifest.media_type or MANIFEST, manifest.digest, manifest.size, platform),
        config,
        config_descriptor,
        layers,
        diff_ids,
    )
