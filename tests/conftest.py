"""Fixtures shared by the compiler tests: example pipelines copied into tmp
folders, and builds shared across a session (building is the slow part)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.build import Built, build_example, close_connections, copy_example
from tests.helpers.documents import write  # noqa: F401  (fixture)
from tests.helpers.spec import write_spec  # noqa: F401  (fixture)

pytest_plugins = ["tests.helpers.docker_engine", "tests.helpers.kafka_broker", "tests.helpers.mqtt_broker"]

SERVING = {
    "http": {"port": 8080},
    "grpc": {"port": 8081},
    "batching": {"max_batch_size": 16, "max_latency_ms": 2},
}


@pytest.fixture(scope="session", autouse=True)
def _app_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Artifacts unpack into a cache of the test session's own, not the user's."""
    path = tmp_path_factory.mktemp("app-cache")
    old = os.environ.get("KBUILD_APP_CACHE")
    os.environ["KBUILD_APP_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KBUILD_APP_CACHE", None)
    else:
        os.environ["KBUILD_APP_CACHE"] = old


@pytest.fixture(autouse=True)
def _close_client_connections() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture
def iris_dir(tmp_path: Path) -> Path:
    """A private copy of examples/iris (its lock files included)."""
    return copy_example("iris", tmp_path)


@pytest.fixture(scope="session")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_example(tmp_path_factory.mktemp("iris-onnx"), "pipeline.yaml")


@pytest.fixture(scope="session")
def iris_sklearn(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_example(tmp_path_factory.mktemp("iris-sklearn"), "sklearn.yaml")


@pytest.fixture(scope="session")
def iris_serving(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The iris ONNX pipeline served over HTTP and gRPC with batching."""
    return build_example(
        tmp_path_factory.mktemp("iris-serving"),
        "serving.yaml",
        derive=("pipeline.yaml", {"serve": SERVING}),
    )
