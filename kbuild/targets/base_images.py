"""Base images, named as skopeo names them, pulled once into the blob store.

    docker-daemon:NAME      from the engine (`docker save` through the SDK)
    docker://REF            from the registry (OCI distribution API)
    oci-archive:PATH[:REF]  an OCI image layout in a tar
    oci:DIR[:REF]           an OCI image layout in a folder
    docker-archive:PATH     `docker save` output
    REF                     the engine's, if it has it, else the registry's

A multi-platform base gives each spin its platform's image. What a name
resolved to is remembered (cache/oci/bases/), so that `--offline` builds from
the cache and an unchanged daemon image is not saved again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.errors import BuildError, UsageError
from kbuild.oci.blobs import LAYER_GZIP, LAYER_TAR, MANIFEST, BlobStore, Descriptor, canonical_json
from kbuild.oci.image import Image, load_image, oci_platform, platform_name, spin_arch, store_image
from kbuild.oci.layers import diff_id_of
from kbuild.oci.layout import LayoutError, copy_blob, is_index, open_source, read_docker_archive, read_layout_entries
from kbuild.oci.reference import Reference
from kbuild.oci.registry import Registry, RegistryError

TRANSPORTS = ("docker-daemon", "docker", "oci-archive", "oci", "docker-archive")
# the transports that name a file or folder on this machine, not an image by name
LOCAL_TRANSPORTS = ("oci-archive", "oci", "docker-archive")


@dataclass(frozen=True)
class Base:
    name: str  # as the user gave it
    image: Image
    source: str  # the transport it came through, e.g. oci-archive

    @property
    def digest(self) -> str:
        return self.image.manifest.digest


def split_name(name: str) -> tuple[str, str]:
    """(transport, rest); a bare reference has the transport ''."""
    transport, colon, rest = name.partition(":")
    if colon and transport in TRANSPORTS:
        if transport == "docker":
            if not rest.startswith("//"):
                raise UsageError(f"base image {name!r}: write docker://REFERENCE")
            rest = rest[2:]
        if not rest:
            raise UsageError(f"base image {name!r} names no image after {transport}:")
        return transport, rest
    return "", name


def _path_and_ref(rest: str) -> tuple[Path, str | None]:
    path, colon, ref = rest.partition(":")
    return Path(path), (ref or None) if colon else None


class Bases:
    """Resolves base names into images in the store, remembering what each name gave."""

    def __init__(self, store: BlobStore, cache: Path, *, offline: bool = False, engine: Any = None) -> None:
        self.store = store
        self.memory = cache / "bases"
        self.offline = offline
        self.engine = engine  # a targets.engine.Engine, or None where no engine is to be used

    def resolve(self, name: str, os_name: str, arch: str) -> Base:
        platform = oci_platform(os_name, arch)
        transport, rest = split_name(name)
        try:
            if transport in ("oci-archive", "oci"):  # OCI image layouts
                path, ref = _path_and_ref(rest)
                with open_source(path, archive=transport == "oci-archive") as files:
                    top = read_layout_entries(files, self.store, ref)
                    manifest = self._pick(top, platform, name)
                    copy_blob(files, self.store, manifest)
                    for blob in manifest_blobs(self.store, manifest):
                        copy_blob(files, self.store, blob)
                return self._checked(Base(name, load_image(self.store, manifest), transport), platform)
            if transport == "docker-archive":
                path, ref = _path_and_ref(rest)
                return self._checked(Base(name, self._docker_archive(path, ref), transport), platform)
            if transport == "docker-daemon":
                found = self._from_engine(name, rest, required=True)
                assert found is not None  # required: absent is an error
                return self._checked(found, platform)
            if transport == "":
                base = self._from_engine(name, rest, required=False)
                if base is not None:
                    return self._checked(base, platform)
            return self._checked(self._from_registry(name, rest, platform), platform)
        except (LayoutError, RegistryError) as error:
            raise BuildError(f"cannot read the base image {name}", [str(error)]) from None

    # what a name resolved to, for offline builds and unchanged engine images

    def _remembered(self, key: str) -> Descriptor | None:
        path = self.memory / (hashlib.sha256(key.encode()).hexdigest() + ".json")
        try:
            descriptor = Descriptor.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None
        image_ok = self.store.has(descriptor.digest)
        if image_ok:
            image = load_image(self.store, descriptor)
            image_ok = all(self.store.has(b.digest) for b in (image.config_descriptor, *image.layers))
        return descriptor if image_ok else None

    def _remember(self, key: str, descriptor: Descriptor) -> None:
        self.memory.mkdir(parents=True, exist_ok=True)
        path = self.memory / (hashlib.sha256(key.encode()).hexdigest() + ".json")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(canonical_json(descriptor.as_dict()))
        tmp.replace(path)

    def _pick(self, top: Descriptor, platform: Mapping[str, str], name: str) -> Descriptor:
        """The manifest for `platform`: `top` itself, or its entry in an index."""
        if not is_index(self.store, top):
            return top
        index = json.loads(self.store.read(top.digest))
        entries = [Descriptor.from_dict(m) for m in index.get("manifests") or []]
        for entry in entries:
            p = entry.platform or {}
            if p.get("os") == platform["os"] and p.get("architecture") == platform["architecture"]:
                return entry
        have = ", ".join(platform_name(e.platform or {}) for e in entries if e.platform) or "no platforms"
        raise BuildError(f"the base image {name} has no {platform_name(platform)} image", [f"it has {have}"])

    def _checked(self, base: Base, platform: Mapping[str, str]) -> Base:
        have = base.image.platform
        if have.get("architecture") != platform["architecture"] or have.get("os", "linux") != platform["os"]:
            raise BuildError(
                f"the base image {base.name} is {platform_name(have)}, but the spin needs {platform_name(platform)}",
                [f"name a {platform_name(platform)} base with --base-image SPIN=IMAGE, or a multi-platform one"],
            )
        return base

    def _docker_archive(self, path: Path, ref: str | None) -> Image:
        with open_source(path, archive=True) as files:
            if files.has("index.json") and not files.has("manifest.json"):
                top = read_layout_entries(files, self.store, ref)
                for blob in manifest_blobs(self.store, top):
                    copy_blob(files, self.store, blob)
                return load_image(self.store, top)
            config_bytes, entry = read_docker_archive(files, self.store, ref)
            config = json.loads(config_bytes)
            layers = []
            for name, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
                with files.open(name) as data:
                    head = data.read(2)
                with files.open(name) as data:
                    media_type = LAYER_GZIP if head == b"\x1f\x8b" else LAYER_TAR
                    layer = self.store.put_stream(data, media_type)
                if (layer.digest if media_type == LAYER_TAR else diff_id_of(self.store, layer)) != diff_id:
                    raise LayoutError(f"{path}: layer {name} is not the one its config lists")
                layers.append(layer)
            return store_image(self.store, config, tuple(layers))

    def _from_engine(self, name: str, image_name: str, required: bool) -> Base | None:
        if self.engine is None:
            if required:
                raise BuildError(
                    f"the base image {name} is to come from the Docker engine, and no engine answers",
                    ["save it with `skopeo copy docker-daemon:... oci-archive:base.tar` and name that"],
                )
            return None
        import docker.errors

        api = self.engine.client.api
        try:
            image_id = str(api.inspect_image(image_name)["Id"])
        except docker.errors.ImageNotFound:
            if required:
                raise BuildError(f"the Docker engine has no image {image_name}") from None
            return None
        except docker.errors.DockerException as error:
            raise BuildError(f"cannot ask the Docker engine for {image_name}", [str(error)]) from None
        key = f"docker-daemon:{image_id}"
        known = self._remembered(key)
        if known is None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="kbuild-base-") as tmp:
                saved = Path(tmp) / "saved.tar"
                with saved.open("wb") as out:
                    for chunk in api.get_image(image_id):
                        out.write(chunk)
                image = self._docker_archive(saved, None)
            known = image.manifest
            self._remember(key, known)
        return Base(name, load_image(self.store, known), "docker-daemon")

    def _from_registry(self, name: str, text: str, platform: Mapping[str, str]) -> Base:
        reference = Reference.parse(text)
        key = f"docker://{reference}|{platform_name(platform)}"
        if self.offline:
            known = self._remembered(key)
            if known is None:
                raise BuildError(
                    f"--offline: the base image {name} is not in the cache",
                    ["build once online, or name a local base (oci-archive:PATH, docker-daemon:NAME)"],
                )
            return Base(name, load_image(self.store, known), "docker")
        registry = Registry(reference)
        top, body = registry.manifest(reference.ref)
        self.store.put(body, top.media_type or MANIFEST)
        manifest = self._pick(top, platform, name)
        if manifest.digest != top.digest:
            child, child_body = registry.manifest(manifest.digest)
            self.store.put(child_body, child.media_type or MANIFEST)
            manifest = Descriptor(child.media_type, child.digest, child.size, manifest.platform)
        for blob in manifest_blobs(self.store, manifest):
            registry.pull_blob(self.store, blob)
        image = load_image(self.store, manifest)
        self._remember(key, image.manifest)
        return Base(name, image, "docker")


def manifest_blobs(store: BlobStore, manifest: Descriptor) -> list[Descriptor]:
    """The config and layers a manifest in the store names."""
    data = json.loads(store.read(manifest.digest))
    if "config" not in data:
        raise LayoutError(f"{manifest.digest} is not an image manifest")
    return [Descriptor.from_dict(data["config"]), *(Descriptor.from_dict(d) for d in data.get("layers") or [])]


def spin_of(image: Image) -> str:
    return spin_arch(image.platform.get("architecture", ""))
