"""The spin's setup layer (image.setup: commands that must run in the base,
such as aurora's `dnf install`): the one thing an engine still does.

The commands run once in a container of the base; the container's changes,
committed and saved, become one layer, cached by the base's digest and the
commands' hash, so every later build on that base takes it from the cache.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker.errors

from kbuild.errors import BuildError
from kbuild.oci.blobs import BlobStore
from kbuild.oci.layers import Layer, diff_id_of
from kbuild.oci.layout import write_layout
from kbuild.targets.base_images import Base
from kbuild.targets.engine import Engine, one_line
from kbuild.targets.protocol import Progress
from kbuild.targets.site_layers import LayerCache, NamedLayer

_TAIL_LINES = 25


def setup_layer(
    engine: Engine | None, store: BlobStore, cache: LayerCache, base: Base, steps: Sequence[str], progress: Progress
) -> NamedLayer:
    key = hashlib.sha256("\n".join(["setup", base.digest, *steps]).encode()).hexdigest()
    found = cache.get(key)
    if found is not None:
        return NamedLayer("setup", found)
    if engine is None:
        raise BuildError(
            f"the spin's {len(steps)} setup commands must run once in the base image, and no engine is in use",
            ["start a Docker engine for the first build on this base; later builds take the layer from the cache"],
        )
    progress(f"running the spin's {len(steps)} setup commands in {base.name} (once per base)")
    layer = _run_setup(engine, store, base, steps)
    cache.put(key, layer)
    return NamedLayer("setup", layer)


def _run_setup(engine: Engine, store: BlobStore, base: Base, steps: Sequence[str]) -> Layer:
    api = engine.client.api
    with tempfile.TemporaryDirectory(prefix="kbuild-setup-") as tmp:
        archive = Path(tmp) / "base.tar"
        write_layout(archive, store, base.image.manifest, list(base.image.blobs), None, base.image)
        try:
            with archive.open("rb") as data:
                api.load_image(data)
            image_id = base.image.config_descriptor.digest
            container = api.create_container(
                image_id,
                command=["/bin/sh", "-ec", " && ".join(f"( {s} )" for s in steps)],
                user="0:0",
                host_config=api.create_host_config(network_mode="host"),
            )
            cid = container["Id"]
            try:
                api.start(cid)
                status = api.wait(cid)
                logs = api.logs(cid).decode("utf-8", "replace").strip().splitlines()
                code = int(status.get("StatusCode", 1))
                if code != 0:
                    raise BuildError(
                        f"the spin's setup commands failed in the base image (exit {code})", logs[-_TAIL_LINES:]
                    )
                committed = api.commit(cid)["Id"]
            finally:
                api.remove_container(cid, force=True)
            saved = Path(tmp) / "saved.tar"
            with saved.open("wb") as out:
                for chunk in api.get_image(committed):
                    out.write(chunk)
            api.remove_image(committed, noprune=False)
        except docker.errors.DockerException as error:
            raise BuildError("cannot run the spin's setup commands in the engine", [one_line(error)]) from None
        return _last_layer(store, saved)


def _last_layer(store: BlobStore, saved: Path) -> Layer:
    import json
    import tarfile

    from kbuild.oci.blobs import LAYER_TAR

    with tarfile.open(saved) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        name = manifest[0]["Layers"][-1]
        member = tar.extractfile(name)
        assert member is not None
        descriptor = store.put_stream(member, LAYER_TAR)
        size = tar.getmember(name).size
    return Layer(descriptor, diff_id_of(store, descriptor), 0, size)
