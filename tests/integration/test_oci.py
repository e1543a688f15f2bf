"""The oci target: an OCI image layout assembled with no daemon, read by
skopeo (not kbuild), copied into the engine and served; the same bytes from
two builds; pushed with no engine, a model change sending only what changed;
two spins in one index; the SBOM inside and beside it."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.bases import arm64_base, engine_base_archive
from tests.helpers.build import ELF_MACHINE, copy_example, free_port, post_json, wait_ready
from tests.helpers.docker_engine import BASE_IMAGE, Registry, docker_cli, remove_image, run_kbuild, session_tag
from tests.helpers.tools import skopeo

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kbuild-test" / "bases"
NO_ENGINE = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # nothing listens on the discard port
SPIN = "cpu-linux-x86_64"


@pytest.fixture(scope="session")
def base_archive(engine: str) -> Path:
    skopeo("--version")
    return engine_base_archive(BASE_IMAGE, CACHE)


@pytest.fixture(scope="session")
def arm64_archive() -> Path:
    return arm64_base(CACHE)


def build_oci(
    folder: Path,
    out: Path,
    base: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    spins: tuple[str, ...] = (SPIN,),
) -> dict[str, Any]:
    spin_args = [arg for spin in spins for arg in ("--spin", spin)]
    proc = run_kbuild(
        *spin_args,
        "--target",
        "oci",
        "--base-image",
        f"oci-archive:{base}",
        "-o",
        out,
        *extra,
        folder / "pipeline.yaml",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads((out / "build-report.json").read_text())
    return report


@pytest.fixture(scope="module")
def iris_oci(tmp_path_factory: pytest.TempPathFactory, base_archive: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("iris-oci")
    folder = copy_example("iris", tmp)
    report = build_oci(folder, tmp / "out", base_archive, "--tag", session_tag("oci"))
    yield Path(report["artifact"]["path"]), report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_on_other_paths_clocks_and_caches_give_the_same_bytes(
    iris_oci: tuple[Path, dict[str, Any]], base_archive: Path, tmp_path: Path
) -> None:
    archive, report = iris_oci
    time.sleep(2)  # another second on the wall clock
    folder = copy_example("iris", tmp_path / "elsewhere" / "deeper")
    for path in folder.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))  # inputs touched: their times must not leak in
    again = build_oci(
        folder,
        tmp_path / "out",
        base_archive,
        "--tag",
        session_tag("oci"),
        env={**NO_ENGINE, "KBUILD_CACHE_DIR": str(tmp_path / "fresh-cache"), "TZ": "Asia/Tokyo"},
    )
    second = Path(again["artifact"]["path"])
    assert again["image"]["digest"] == report["image"]["digest"]
    assert _sha256(second) == _sha256(archive)
    # an outside reader agrees on the digest
    inspected = json.loads(skopeo("inspect", f"oci-archive:{second}").stdout)
    assert inspected["Digest"] == report["image"]["digest"]
    # no engine: checked under QEMU in the image's own root
    assert again["verification"]["status"] == "verified (emulated x86_64)"
    assert (tmp_path / "out" / second.name.replace(".oci.tar", ".cdx.json")).read_bytes() == (
        archive.parent / archive.name.replace(".oci.tar", ".cdx.json")
    ).read_bytes()


def test_skopeo_copies_it_into_the_engine_where_it_serves_as_non_root(iris_oci: tuple[Path, dict[str, Any]]) -> None:
    archive, report = iris_oci
    tag = session_tag("from-skopeo")
    try:
        skopeo("copy", "-q", f"oci-archive:{archive}", f"docker-daemon:{tag}")
        check = docker_cli("run", "--rm", "--network", "none", "--read-only", tag, "check")
        assert check.returncode == 0 and "2 passed, 0 failed" in check.stdout, check.stdout + check.stderr
        whoami = docker_cli("run", "--rm", "--network", "none", "--entrypoint", "id", tag, "-u")
        assert whoami.stdout.strip() == "10001"
        port = free_port()
        started = docker_cli("run", "-d", "--rm", "--network", "host", "-e", f"KBUILD_HTTP_PORT={port}", tag)
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        try:
            wait_ready(port, timeout=120)
            status, answer = post_json(port, "/predict", {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
            assert status == 200 and answer["label"] == ["setosa", "virginica"], answer
        finally:
            docker_cli("rm", "-f", container)
    finally:
        remove_image(tag)


def test_the_image_target_loads_the_archives_image_with_its_config_digest_as_id(
    iris_oci: tuple[Path, dict[str, Any]], base_archive: Path, tmp_path: Path
) -> None:
    archive, report = iris_oci
    tar, index = _layout(archive)
    with tar:
        manifest = json.loads(_blob(tar, index["manifests"][0]["digest"]))
    config_digest = manifest["config"]["digest"]
    assert report["image"]["id"] == config_digest
    folder = copy_example("iris", tmp_path)
    tags = [session_tag(f"same-id-{n}") for n in (1, 2)]
    try:
        ids = []
        for n, tag in enumerate(tags):
            proc = run_kbuild(
                "--spin",
                SPIN,
                "--target",
                "image",
                "--tag",
                tag,
                "--base-image",
                f"oci-archive:{base_archive}",
                "-o",
                tmp_path / f"image-{n}",
                folder / "pipeline.yaml",
            )
            assert proc.returncode == 0, proc.stderr
            built = json.loads((tmp_path / f"image-{n}" / "build-report.json").read_text())
            assert built["target"] == "image" and built["image"]["id"] == config_digest
            ids.append(json.loads(docker_cli("image", "inspect", tag).stdout)[0]["Id"])
        assert ids == [config_digest, config_digest]
    finally:
        for tag in tags:
            remove_image(tag)


def test_push_with_no_engine_then_a_model_change_sends_only_what_changed(
    base_archive: Path, registry: Registry, tmp_path: Path
) -> None:
    tag = f"{registry.address}/kbuild-test/iris:oci-{os.getpid()}"
    env = {**NO_ENGINE, "DOCKER_CONFIG": str(registry.docker_config(tmp_path / "docker-config"))}
    folder = copy_example("iris", tmp_path / "a")
    first = build_oci(folder, tmp_path / "one", base_archive, "--tag", tag, "--push", env=env)
    served = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", "--creds", f"{registry.user}:{registry.password}", f"docker://{tag}"
        ).stdout
    )
    assert served["Digest"] == first["image"]["digest"] == first["image"]["pushed"]["digest"]

    import onnx

    model = onnx.load(str(folder / "models/iris.onnx"))
    model.doc_string = "retrained"  # new bytes, same answers
    onnx.save(model, str(folder / "models/iris.onnx"))
    before = registry.blob_count()
    second = build_oci(folder, tmp_path / "two", base_archive, "--tag", tag, "--push", env=env)
    layers = [[layer["digest"] for layer in r["image"]["layers"]] for r in (first, second)]
    assert sum(a != b for a, b in zip(*layers, strict=True)) == 2  # models and config
    # the registry received the two layers, the image config and the manifest (which it keeps as a blob too)
    assert registry.blob_count() - before == 4
    assert second["image"]["pushed"]["uploaded_blobs"] == 3


def _layout(archive: Path) -> tuple[tarfile.TarFile, Any]:
    tar = tarfile.open(archive)
    member = tar.extractfile("index.json")
    assert member is not None
    return tar, json.loads(member.read())


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
    assert member is not None
    return member.read()


def _elf_machines(layer: bytes) -> set[str]:
    import gzip
    import io

    found: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            head = data.read(20) if data is not None else b""
            if head[:4] == b"\x7fELF":
                found.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
    return found


def test_two_spins_make_one_index_built_here_with_no_emulation(
    base_archive: Path, arm64_archive: Path, tmp_path: Path
) -> None:
    folder = copy_example("iris", tmp_path)
    proc = run_kbuild(
        "--spin",
        SPIN,
        "--spin",
        "cpu-linux-aarch64",
        "--target",
        "oci",
        "--base-image",
        f"{SPIN}=oci-archive:{base_archive}",
        "--base-image",
        f"cpu-linux-aarch64=oci-archive:{arm64_archive}",
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "build-report.json").read_text())
    archive = Path(report["artifact"]["path"])
    raw = json.loads(skopeo("inspect", "--raw", f"oci-archive:{archive}").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    tar, _ = _layout(archive)
    with tar:
        for entry in raw["manifests"]:
            manifest = json.loads(_blob(tar, entry["digest"]))
            ours = manifest["layers"][-6:]  # base layers first; the packages, runtime, models, config last
            machines = set().union(*(_elf_machines(_blob(tar, layer["digest"])) for layer in ours))
            want = {"amd64": "x86_64", "arm64": "aarch64"}[entry["platform"]["architecture"]]
            assert machines == {want}, (entry["platform"], machines)
    by_spin = report["verification"]["by_spin"]
    assert by_spin[SPIN]["status"] == "passed"
    assert by_spin["cpu-linux-aarch64"]["status"] == "verified (emulated aarch64)"
    # an engine holds one platform per tag: without --push, the host's is loaded, and the build says so
    tag = session_tag("two-spins")
    try:
        loaded = run_kbuild(
            "--spin",
            SPIN,
            "--spin",
            "cpu-linux-aarch64",
            "--target",
            "image",
            "--tag",
            tag,
            "--base-image",
            f"{SPIN}=oci-archive:{base_archive}",
            "--base-image",
            f"cpu-linux-aarch64=oci-archive:{arm64_archive}",
            "-o",
            tmp_path / "loaded",
            folder / "pipeline.yaml",
        )
        assert loaded.returncode == 0, loaded.stderr
        assert f"loaded only {SPIN} (linux/amd64) into the engine as {tag}" in loaded.stderr
        assert json.loads(docker_cli("image", "inspect", tag).stdout)[0]["Architecture"] == "amd64"
    finally:
        remove_image(tag)


def test_two_spins_push_one_index_that_a_registry_serves_per_platform(
    base_archive: Path, arm64_archive: Path, registry: Registry, tmp_path: Path
) -> None:
    tag = f"{registry.address}/kbuild-test/iris:index-{os.getpid()}"
    folder = copy_example("iris", tmp_path)
    proc = run_kbuild(
        "--spin",
        SPIN,
        "--spin",
        "cpu-linux-aarch64",
        "--target",
        "oci",
        "--tag",
        tag,
        "--push",
        "--base-image",
        f"{SPIN}=oci-archive:{base_archive}",
        "--base-image",
        f"cpu-linux-aarch64=oci-archive:{arm64_archive}",
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
        env={**NO_ENGINE, "DOCKER_CONFIG": str(registry.docker_config(tmp_path / "docker-config"))},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "build-report.json").read_text())
    creds = ("--tls-verify=false", "--creds", f"{registry.user}:{registry.password}")
    served = skopeo("inspect", "--raw", *creds, f"docker://{tag}").stdout
    assert "sha256:" + hashlib.sha256(served.encode()).hexdigest() == report["index"]["digest"]
    index = json.loads(served)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert sorted(by_arch) == ["amd64", "arm64"]
    repository = tag.rsplit(":", 1)[0]
    for arch, digest in by_arch.items():  # the registry holds each platform's manifest, and its image is that arch
        raw = skopeo("inspect", "--raw", *creds, f"docker://{repository}@{digest}").stdout
        assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
        one = json.loads(skopeo("--override-arch", arch, "inspect", *creds, f"docker://{tag}").stdout)
        assert one["Architecture"] == arch and one["Layers"] == [layer["digest"] for layer in json.loads(raw)["layers"]]


def test_the_sbom_is_cyclonedx_16_inside_and_beside(iris_oci: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    archive, report = iris_oci
    beside = archive.parent / archive.name.replace(".oci.tar", ".cdx.json")
    text = beside.read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert errors is None, errors
    sbom = json.loads(text)
    assert sbom["specVersion"] == "1.6" and sbom["serialNumber"].startswith("urn:uuid:")
    by_name = {c["name"]: c for c in sbom["components"]}
    for package in report["packages"]:
        component = by_name[package["name"]]
        assert component["purl"] == f"pkg:pypi/{package['name']}@{package['version']}"
        assert component["hashes"] == [{"alg": "SHA-256", "content": package["sha256"]}]
    model = by_name["model/iris.onnx"]
    assert model["type"] == "machine-learning-model"
    model_file = Path(report["pipeline"]["path"]).parent / "models" / "iris.onnx"
    assert model["hashes"][0]["content"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    base = next(c for c in sbom["components"] if c["type"] == "container")
    assert base["version"] == report["image"]["base"]["digest"]
    assert base["purl"].startswith("pkg:oci/") and report["image"]["base"]["digest"].split(":")[1] in base["purl"]
    # inside: /opt/kbuild/sbom.cdx.json in the image's last layer
    import gzip
    import io

    tar, _ = _layout(archive)
    with tar:
        manifest = json.loads(_blob(tar, report["image"]["digest"]))
        last = gzip.decompress(_blob(tar, manifest["layers"][-1]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(last)) as layer:
        inside = layer.extractfile("opt/kbuild/sbom.cdx.json")
        assert inside is not None
        assert inside.read().decode() == text


def test_a_registry_base_is_pulled_once_then_offline_builds_use_the_cache(
    base_archive: Path, registry: Registry, tmp_path: Path
) -> None:
    base = f"{registry.address}/kbuild-test/base:{os.getpid()}"
    skopeo(
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        f"{registry.user}:{registry.password}",
        f"oci-archive:{base_archive}",
        f"docker://{base}",
    )
    folder = copy_example("iris", tmp_path)
    cache = {"KBUILD_CACHE_DIR": str(tmp_path / "cache"), **NO_ENGINE}
    pulled = run_kbuild(
        "--spin",
        SPIN,
        "--target",
        "oci",
        "--base-image",
        f"docker://{base}",
        "-o",
        tmp_path / "one",
        folder / "pipeline.yaml",
        env={**cache, "DOCKER_CONFIG": str(registry.docker_config(tmp_path / "docker-config"))},
    )
    assert pulled.returncode == 0, pulled.stderr
    first = json.loads((tmp_path / "one" / "build-report.json").read_text())
    # no credentials now: only the cache can give the base
    offline = run_kbuild(
        "--spin",
        SPIN,
        "--target",
        "oci",
        "--offline",
        "--base-image",
        f"docker://{base}",
        "-o",
        tmp_path / "two",
        folder / "pipeline.yaml",
        env={**cache, "DOCKER_CONFIG": str(tmp_path / "no-config")},
    )
    assert offline.returncode == 0, offline.stderr
    second = json.loads((tmp_path / "two" / "build-report.json").read_text())
    assert second["image"]["base"]["digest"] == first["image"]["base"]["digest"]
    assert second["image"]["digest"] == first["image"]["digest"]
    # a base never pulled is named as missing from the cache, exit 5
    missing = run_kbuild(
        "--spin",
        SPIN,
        "--target",
        "oci",
        "--offline",
        "--base-image",
        f"docker://{registry.address}/kbuild-test/never:1",
        "-o",
        tmp_path / "three",
        folder / "pipeline.yaml",
        env=cache,
    )
    assert missing.returncode == 5 and "not in the cache" in missing.stderr, missing.stderr
