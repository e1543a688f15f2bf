"""References as registries read them, and where plain HTTP is allowed."""

from __future__ import annotations

import pytest

from kbuild.errors import UsageError
from kbuild.oci.reference import Reference, is_loopback
from kbuild.targets.base_images import split_name


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:3.11-slim", "docker.io", "library/python", "3.11-slim", None),
        ("python", "docker.io", "library/python", "latest", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("127.0.0.1:5000/team/iris:1", "127.0.0.1:5000", "team/iris", "1", None),
        ("localhost/iris", "localhost", "iris", "latest", None),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io", "o/r", None, "sha256:" + "a" * 64),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_plain_http_only_on_this_machine() -> None:
    assert Reference.parse("127.0.0.1:5000/iris:1").scheme == "http"
    assert Reference.parse("localhost:5000/iris:1").scheme == "http"
    assert Reference.parse("[::1]:5000/iris:1").scheme == "http"
    assert Reference.parse("registry.example.com/iris:1").scheme == "https"
    assert Reference.parse("10.0.0.1:5000/iris:1").scheme == "https"
    assert Reference.parse("python:3.11").api_host == "registry-1.docker.io"
    assert not is_loopback("example.com")


@pytest.mark.parametrize(
    ("name", "transport", "rest"),
    [
        ("oci-archive:/tmp/b.tar", "oci-archive", "/tmp/b.tar"),
        ("docker://python:3.11", "docker", "python:3.11"),
        ("docker-daemon:kbuild-test/python:3.11", "docker-daemon", "kbuild-test/python:3.11"),
        ("python:3.11", "", "python:3.11"),
        ("localhost:5000/x", "", "localhost:5000/x"),
    ],
)
def test_skopeo_names(name: str, transport: str, rest: str) -> None:
    assert split_name(name) == (transport, rest)


@pytest.mark.parametrize("name", ["docker:python", "oci-archive:"])
def test_bad_skopeo_names_say_how(name: str) -> None:
    with pytest.raises(UsageError):
        split_name(name)
