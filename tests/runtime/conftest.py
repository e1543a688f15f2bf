"""Fixtures for the runtime tests: small real models made here, artifact roots
in tmp_path (helpers in runtime_helpers.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.runtime import MakeRoot, write_root


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, iris: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    """iris.joblib (LogisticRegression), iris.onnx (zipmap off),
    iris_zipmap.onnx (skl2onnx's default list-of-dicts output)."""
    import joblib
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    folder = tmp_path_factory.mktemp("models")
    out = {
        "sklearn": folder / "iris.joblib",
        "onnx": folder / "iris.onnx",
        "zipmap": folder / "iris_zipmap.onnx",
    }
    joblib.dump(clf, out["sklearn"])
    plain = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    out["onnx"].write_bytes(plain.SerializeToString())
    zipmap = to_onnx(clf, x[:1], target_opset=17)
    out["zipmap"].write_bytes(zipmap.SerializeToString())
    return out


@pytest.fixture
def make_root(tmp_path: Path) -> MakeRoot:
    counter = iter(range(1000))

    def make(pipeline: Mapping[str, Any], **kwargs: Any) -> Path:
        return write_root(tmp_path / f"root{next(counter)}", pipeline, **kwargs)

    return make
