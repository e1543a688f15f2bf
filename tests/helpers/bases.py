"""Base images for the image tests, made without a registry: the local
Debian base from the engine as an OCI archive (skopeo), and an arm64 Debian
root (mmdebstrap, Debian's arm64 packages) as a one-layer OCI archive.

The arm64 archive is written here with the standard library alone, not with
kbuild's code, so that the tests do not check kbuild against itself; skopeo
reads it before a test uses it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.helpers.build import component_missing

ARM64_SUITE = "bookworm"
ARM64_PACKAGES = "python3,libstdc++6,libgomp1"


def _blob(folder: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (folder / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (folder / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def oci_archive_from_root(root_tar: Path, architecture: str, dest: Path) -> Path:
    """A one-layer OCI archive of a root file system tarball."""
    tmp = dest.with_suffix(".layout")
    shutil.rmtree(tmp, ignore_errors=True)
    plain = root_tar.read_bytes()
    layer = gzip.compress(plain, mtime=0)
    layer_digest, layer_size = _blob(tmp, layer)
    config = {
        "architecture": architecture,
        "os": "linux",
        **({"variant": "v8"} if architecture == "arm64" else {}),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["python3"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(plain).hexdigest()}"]},
    }
    config_digest, config_size = _blob(tmp, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    manifest_digest, manifest_size = _blob(tmp, json.dumps(manifest).encode())
    (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (tmp / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": manifest_size,
                        "platform": {"os": "linux", "architecture": architecture},
                    }
                ],
            }
        )
    )
    with tarfile.open(dest, "w") as tar:
        for path in sorted(tmp.rglob("*")):
            tar.add(path, arcname=path.relative_to(tmp).as_posix(), recursive=False)
    shutil.rmtree(tmp)
    return dest


def arm64_base(cache: Path) -> Path:
    """oci-archive of Debian bookworm's arm64 python3, made once per machine."""
    dest = cache / "python-3.11-bookworm-arm64.oci.tar"
    if dest.is_file():
        return dest
    if not shutil.which("mmdebstrap"):
        component_missing("mmdebstrap is not installed (scripts/test-tools.sh installs it)")
    cache.mkdir(parents=True, exist_ok=True)
    root_tar = cache / "arm64-root.tar"
    proc = subprocess.run(
        [
            "mmdebstrap",
            "--variant=extract",
            "--arch=arm64",
            f"--include={ARM64_PACKAGES}",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            ARM64_SUITE,
            str(root_tar),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    oci_archive_from_root(root_tar, "arm64", dest.with_suffix(".tmp"))
    root_tar.unlink()
    dest.with_suffix(".tmp").replace(dest)
    return dest


def engine_base_archive(reference: str, cache: Path) -> Path:
    """The engine's base image as an OCI archive, copied by skopeo (once per image ID)."""
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert image_id, f"the engine has no {reference}"
    dest = cache / f"base-{image_id.split(':')[-1][:16]}.oci.tar"
    if not dest.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        proc = subprocess.run(
            ["skopeo", "copy", "-q", f"docker-daemon:{reference}", f"oci-archive:{tmp}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        tmp.replace(dest)
    return dest
