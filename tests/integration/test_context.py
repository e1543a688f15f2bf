"""The build-context target: one tarball, the same bytes from the same inputs,
that the plain docker CLI builds offline into a working image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.build import copy_example, kbuild
from tests.helpers.docker_engine import (
    BASE_IMAGE,
    ImageBuild,
    docker_cli,
    remove_image,
    run_kbuild,
    session_tag,
)

CONTEXT = "iris-1.0.0-cpu-linux-x86_64.context.tar"


def build_context(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    folder = copy_example("iris", tmp)
    return kbuild(
        "--spin", "cpu-linux-x86_64", "--target", "context", "-o", tmp / "out", *extra, folder / "pipeline.yaml"
    )


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("context")
    proc = build_context(tmp, "--base-image", BASE_IMAGE, "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # -q: nothing but the artifact's path
    path = Path(proc.stdout.strip())
    assert path == tmp / "out" / CONTEXT
    return path


@pytest.fixture(scope="module")
def context_image(context: Path, base_image: str) -> Iterator[str]:
    """The context built by the plain docker CLI, offline, once per module; its tag."""
    tag = session_tag("context")
    try:
        with context.open("rb") as tar:
            proc = subprocess.run(
                ["docker", "build", "--network", "none", "-t", tag, "-"],
                stdin=tar,
                capture_output=True,
                text=True,
                timeout=1800,
            )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield tag
    finally:
        remove_image(tag)


def test_the_same_inputs_give_the_same_bytes(context: Path, tmp_path: Path) -> None:
    """From another copy of the example in another folder, at another time."""
    proc = build_context(tmp_path, "--base-image", BASE_IMAGE)
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "out" / CONTEXT
    assert again.read_bytes() == context.read_bytes()
    report = json.loads((tmp_path / "out" / "build-report.json").read_text())
    assert report["artifact"]["sha256"] == hashlib.sha256(context.read_bytes()).hexdigest()


def test_entries_are_sorted_with_fixed_metadata(context: Path) -> None:
    with tarfile.open(context) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {315532800}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    assert {m.mode for m in members if m.isdir()} == {0o755}
    assert {
        "Dockerfile",
        "kbuild/bootstrap.py",
        "kbuild/install_wheels.py",
        "models/models/model/iris.onnx",
        "config/pipeline.json",
        "config/samples.json",
        "config/build.json",
    } <= set(names)
    wheels = [n for n in names if n.startswith("wheels/") and n.endswith(".whl")]
    assert any("onnxruntime" in w for w in wheels) and not any(w.startswith("wheels/pip-") for w in wheels)


def test_source_date_epoch_sets_the_timestamps(tmp_path: Path) -> None:
    folder = copy_example("iris", tmp_path)
    proc = run_kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "context",
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "out" / CONTEXT) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
        dockerfile = tar.extractfile("Dockerfile")
        assert dockerfile is not None
        assert 'org.opencontainers.image.created="2023-11-14T22:13:20Z"' in dockerfile.read().decode()


def test_the_dockerfile_layers_from_stable_to_volatile(context: Path) -> None:
    with tarfile.open(context) as tar:
        member = tar.extractfile("Dockerfile")
        assert member is not None
        text = member.read().decode()
    instructions = [
        line.split()[0] + " " + line.split()[1]
        for line in text.splitlines()
        if line.startswith(("FROM", "COPY", "RUN"))
    ]
    assert instructions == [
        f"FROM {BASE_IMAGE}",
        "FROM base",  # the wheels stage
        "COPY kbuild/",
        "COPY wheels/",
        'RUN ["python3",',
        "FROM base",  # the runtime stage: kbuild's modules and their bytecode
        "COPY site/",
        'RUN ["python3",',
        "FROM base",
        "COPY --from=wheels",
        "COPY --from=runtime",
        "COPY models/",
        "COPY config/",
        "COPY sbom.cdx.json",
    ]
    instructions_text = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "pip " not in instructions_text and 'pip"' not in instructions_text


def test_beside_it_the_deployment_files_and_a_report(context: Path) -> None:
    out = context.parent
    assert (out / "k8s" / "deployment.yaml").is_file() and (out / "k8s" / "service.yaml").is_file()
    assert (out / "run.sh").stat().st_mode & 0o111
    report = json.loads((out / "build-report.json").read_text())
    assert report["target"] == "context"
    assert report["verification"]["status"] == "not verified"
    assert sorted(Path(p).relative_to(out.resolve()).as_posix() for p in report["deployment"]) == [
        "k8s/deployment.yaml",
        "k8s/hpa.yaml",
        "k8s/kustomization.yaml",
        "k8s/pdb.yaml",
        "k8s/service.yaml",
        "kserve/inferenceservice.yaml",
        "kserve/servingruntime.yaml",
        "run.sh",
    ]


def test_the_docker_cli_builds_it_offline_and_the_image_checks(context_image: str) -> None:
    check = docker_cli("run", "--rm", "--network", "none", context_image, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 passed, 0 failed" in check.stdout


def test_user_code_has_a_layer_before_the_models(tmp_path: Path) -> None:
    folder = copy_example("iris", tmp_path)
    proc = kbuild("--spin", "cpu-linux-x86_64", "--target", "context", "-o", tmp_path / "out", folder / "sklearn.yaml")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(proc.stdout.strip()) as tar:
        names = tar.getnames()
        member = tar.extractfile("Dockerfile")
        assert member is not None
        copies = [line.split()[1] for line in member.read().decode().splitlines() if line.startswith("COPY ")]
    assert "code/code/temper/temper.py" in names and "models/models/model/iris.joblib" in names
    assert copies[-4:] == ["code/", "models/", "config/", "sbom.cdx.json"]


def test_aurora_context_names_rocky_nec_and_veda(tmp_path: Path) -> None:
    folder = copy_example("torchscript", tmp_path)
    proc = kbuild("--spin", "aurora-linux", "--target", "context", "-o", tmp_path / "out", folder / "pipeline.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "not verified" in proc.stderr  # no vector engine here
    [path] = (tmp_path / "out").glob("*.context.tar")
    with tarfile.open(path) as tar:
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
        lock = tar.extractfile("requirements.lock").read().decode()  # type: ignore[union-attr]
    assert "FROM rockylinux:8" in dockerfile
    assert "ve-container" in dockerfile and "nec-sdk-runtime" in dockerfile
    assert "veda-pytorch==" in lock and "aurora-linux" in lock
    assert (tmp_path / "out" / "k8s" / "deployment.yaml").is_file()


def _files(tag: str) -> dict[str, int]:
    """Every file under /opt/kbuild in an image, with its size."""
    listing = docker_cli(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "find",
        tag,
        "/opt/kbuild",
        "-type",
        "f",
        "-printf",
        "%p %s\\n",
    )
    assert listing.returncode == 0, listing.stderr
    return {line.split()[0]: int(line.split()[1]) for line in listing.stdout.splitlines()}


def test_the_dockerfile_route_and_the_assembled_image_hold_the_same_files(
    context_image: str, iris_image: ImageBuild
) -> None:
    built, assembled = _files(context_image), _files(iris_image.tag)
    assert sorted(built) == sorted(assembled)
    assert any(name.endswith(".pyc") for name in built)  # bytecode in both, runtime and packages
    # the same sources and models, byte for byte in size; the reports and SBOMs say which target made them
    differ = {n for n in built if built[n] != assembled[n] and not n.endswith(".pyc")}
    assert differ <= {"/opt/kbuild/app/build.json", "/opt/kbuild/app/files.json", "/opt/kbuild/sbom.cdx.json"}, differ
