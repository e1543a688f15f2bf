"""Base images by skopeo's names: what each bad one says."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from kbuild.errors import BuildError
from kbuild.oci.blobs import BlobStore
from kbuild.targets.base_images import Bases
from tests.helpers.bases import oci_archive_from_root


def _root_tar(tmp: Path) -> Path:
    path = tmp / "root.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        data = b"ID=test\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _bases(tmp: Path, offline: bool = False) -> Bases:
    return Bases(BlobStore(tmp / "store"), tmp / "cache", offline=offline)


def test_an_archive_gives_its_image_and_layers(tmp_path: Path) -> None:
    archive = oci_archive_from_root(_root_tar(tmp_path), "amd64", tmp_path / "base.tar")
    base = _bases(tmp_path).resolve(f"oci-archive:{archive}", "linux", "x86_64")
    assert base.image.platform["architecture"] == "amd64" and len(base.image.layers) == 1
    assert base.digest.startswith("sha256:") and base.source == "oci-archive"


def test_a_missing_archive_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path).resolve(f"oci-archive:{tmp_path}/nowhere.tar", "linux", "x86_64")
    assert caught.value.exit_code == 5
    assert "cannot read the base image" in caught.value.render() and "nowhere.tar" in caught.value.render()


def test_another_architecture_is_refused_with_the_way_out(tmp_path: Path) -> None:
    archive = oci_archive_from_root(_root_tar(tmp_path), "arm64", tmp_path / "base.tar")
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path).resolve(f"oci-archive:{archive}", "linux", "x86_64")
    text = caught.value.render()
    assert "is linux/arm64/v8, but the spin needs linux/amd64" in text and "--base-image SPIN=IMAGE" in text


def test_an_index_without_the_platform_lists_what_it_has(tmp_path: Path) -> None:
    archive = oci_archive_from_root(_root_tar(tmp_path), "arm64", tmp_path / "base.tar")
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    nested = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index["manifests"]}
    ).encode()
    import hashlib

    digest = hashlib.sha256(nested).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(nested)
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": f"sha256:{digest}",
                        "size": len(nested),
                    }
                ],
            }
        )
    )
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path).resolve(f"oci:{layout}", "linux", "x86_64")
    assert "has no linux/amd64 image" in caught.value.render() and "it has linux/arm64" in caught.value.render()


def test_a_damaged_blob_is_refused(tmp_path: Path) -> None:
    archive = oci_archive_from_root(_root_tar(tmp_path), "amd64", tmp_path / "base.tar")
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blobs[-1].write_bytes(blobs[-1].read_bytes() + b"tampered")  # the layer, the largest
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path).resolve(f"oci:{layout}", "linux", "x86_64")
    assert "damaged" in caught.value.render()


def test_offline_takes_only_what_the_cache_holds(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path, offline=True).resolve("docker://registry.example.com/python:3.11", "linux", "x86_64")
    assert "--offline" in caught.value.render() and "not in the cache" in caught.value.render()


def test_the_engine_is_named_where_none_is_used(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        _bases(tmp_path).resolve("docker-daemon:python:3.11", "linux", "x86_64")
    assert "no engine answers" in caught.value.render() and "oci-archive" in caught.value.render()
