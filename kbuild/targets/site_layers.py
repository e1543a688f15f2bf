"""The installed packages and the runtime as layers, content-addressed.

A layer's key is a hash of what goes in (wheel hashes or file hashes, the
Python that compiles the bytecode, the layout); a layer already made for that
key is taken from the cache, so pipelines with the same wheels share their
package layers and a rebuild after a model change recompresses nothing else.
Large wheels (torch, onnxruntime) get a layer each, shared between pipelines
that lock different small packages around them.

Bytecode is compiled for the image's Python (unchecked-hash .pyc, hash seed 0,
paths as in the image) so that a container never compiles at start: its root
is read-only to the service's user.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kbuild.errors import BuildError
from kbuild.oci.blobs import BlobStore, Descriptor
from kbuild.oci.layers import FileEntry, Layer, layer_epoch, tree_entries, write_layer
from kbuild.resolve.fetch import Wheel
from kbuild.runtime.contract.bootstrap import install_wheel

FORMAT = "kbuild-layer-1"
OWN_LAYER_BYTES = 16 << 20  # a wheel this big gets a layer of its own
_COMPILE = (
    "import compileall, py_compile, sys;"
    "ok = compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=2, workers=1,"
    " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH);"
    "sys.exit(0 if ok else 1)"
)


@dataclass(frozen=True)
class NamedLayer:
    name: str  # what the report calls it: packages, package torch, runtime, code, models, config
    layer: Layer


class LayerCache:
    """Layers by key: cache/oci/layers/KEY.json names the blob in the store."""

    def __init__(self, store: BlobStore, folder: Path) -> None:
        self.store = store
        self.folder = folder

    def get(self, key: str) -> Layer | None:
        try:
            data = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        descriptor = Descriptor.from_dict(data["descriptor"])
        if not self.store.has(descriptor.digest):
            return None
        return Layer(descriptor, data["diff_id"], data["files"], data["tar_bytes"])

    def put(self, key: str, layer: Layer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {
            "descriptor": layer.descriptor.as_dict(),
            "diff_id": layer.diff_id,
            "files": layer.files,
            "tar_bytes": layer.tar_bytes,
        }
        tmp = self.folder / f".{key}.tmp"
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(self.folder / f"{key}.json")

    def layer(self, key_parts: Sequence[str], make: Callable[[], AbstractContextManager[list[FileEntry]]]) -> Layer:
        """The layer for the key, written from `make()`'s entries (which need
        only live while it is written) when the cache lacks it."""
        key = hashlib.sha256("\n".join([FORMAT, str(layer_epoch()), *key_parts]).encode()).hexdigest()
        found = self.get(key)
        if found is None:
            with make() as entries:
                found = write_layer(self.store, entries)
            self.put(key, found)
        return found


def compile_bytecode(python: str, folder: Path, image_folder: str) -> None:
    """Unchecked-hash .pyc files beside the sources under `folder`, naming
    their sources as `image_folder` will hold them."""
    env = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        [python, "-I", "-c", _COMPILE, str(folder), image_folder], capture_output=True, text=True, env=env, timeout=1800
    )
    if proc.returncode != 0:
        raise BuildError(f"cannot compile the bytecode of {image_folder}", proc.stdout.splitlines()[-10:])


def file_digest_parts(entries: Sequence[FileEntry]) -> list[str]:
    parts = []
    for entry in sorted(entries, key=lambda e: e.path):
        data = entry.source if isinstance(entry.source, bytes) else entry.source.read_bytes()
        parts.append(f"{entry.path} {int(entry.executable)} {hashlib.sha256(data).hexdigest()}")
    return parts


@contextmanager
def _compiled_site(fill: Callable[[Path], object], site_path: str, python: str | None) -> Iterator[list[FileEntry]]:
    """A temporary site folder filled by `fill`, with its bytecode; its files
    as they go into the image, read from disk while the layer is written."""
    with tempfile.TemporaryDirectory(prefix="kbuild-site-") as tmp:
        site = Path(tmp) / "site"
        fill(site)
        if python is not None:
            compile_bytecode(python, site, site_path)
        yield tree_entries(site_path.strip("/"), site)


def _install(wheels: Sequence[Wheel], site: Path) -> None:
    site.mkdir()
    for wheel in wheels:
        install_wheel(wheel.path, site)


def package_layers(cache: LayerCache, wheels: Sequence[Wheel], site_path: str, python: str | None) -> list[NamedLayer]:
    """One layer per large wheel, then one for the rest, in name order."""
    big = [w for w in wheels if w.path.stat().st_size >= OWN_LAYER_BYTES]
    rest = [w for w in wheels if w not in big]
    groups = [(f"package {w.package.name}", [w]) for w in sorted(big, key=lambda w: w.package.name)]
    if rest:
        groups.append(("packages", rest))
    found = []
    for name, group in groups:
        parts = [site_path, f"python {python_version_key(python)}", *sorted(w.sha256 for w in group)]
        found.append(
            NamedLayer(name, cache.layer(parts, partial(_compiled_site, partial(_install, group), site_path, python)))
        )
    return found


def runtime_layer(cache: LayerCache, site: Path, site_path: str, python: str | None) -> NamedLayer:
    """kbuild's runtime modules (the root's site/), with their bytecode."""
    sources = tree_entries(site_path.strip("/"), site)
    parts = [site_path, f"python {python_version_key(python)}", *file_digest_parts(sources)]
    copy = partial(shutil.copytree, site)
    return NamedLayer("runtime", cache.layer(parts, partial(_compiled_site, copy, site_path, python)))


def files_layer(cache: LayerCache, name: str, entries: list[FileEntry]) -> NamedLayer:
    def given() -> AbstractContextManager[list[FileEntry]]:
        return nullcontext(entries)

    return NamedLayer(name, cache.layer(file_digest_parts(entries), given))


_VERSIONS: dict[str, str] = {}


def python_version_key(python: str | None) -> str:
    """What the bytecode depends on: the compiling interpreter's exact version."""
    if python is None:
        return "none"
    if python not in _VERSIONS:
        proc = subprocess.run(
            [python, "-c", "import sys, importlib.util as u; print(sys.version.split()[0], u.MAGIC_NUMBER.hex())"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        _VERSIONS[python] = proc.stdout.strip() or "unknown"
    return _VERSIONS[python]
