"""Shared by the tests of integration/test_serving.py and its siblings."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.helpers.build import EXAMPLES, Built, free_port, http_connection, wait_ready

LABELS = ["setosa", "versicolor", "virginica"]


INFER = "/v2/models/iris/infer"


TIMEOUT_S = 60


@dataclass
class Served:
    http_port: int
    grpc_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def connect(self) -> http.client.HTTPConnection:
        return http_connection(self.http_port, TIMEOUT_S)


@pytest.fixture(scope="module")
def served(iris_serving: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serving") / "server.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(iris_serving.artifact),
                "serve",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_ready(http_port, proc)
        yield Served(http_port, grpc_port, proc, log)
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT_S) == 0, log.read_text()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == ["start", "ready", "stop"], log.read_text()


def model_answer(rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """What the example's ONNX model itself says."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(EXAMPLES / "iris" / "models" / "iris.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"float_input": rows.astype(np.float32)})[0]
    return [LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def iris_rows(n: int) -> np.ndarray:
    from sklearn.datasets import load_iris

    x = load_iris().data.astype(np.float32)
    rng = np.random.default_rng(7)
    extra = x[rng.integers(0, len(x), max(0, n - len(x)))] + rng.normal(0, 0.3, (max(0, n - len(x)), 4))
    return np.concatenate([x, extra.astype(np.float32)])[:n]


def post(served: Served, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = served.connect()
    conn.request("POST", path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def infer_http_json(port: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [triton_http.InferInput("features", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows, binary_data=False)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=False) for n in ("label", "probability")]
    result = client.infer("iris", inputs, outputs=outputs)
    return [str(v) for v in result.as_numpy("label")], result.as_numpy("probability")


def infer_http_binary(port: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [triton_http.InferInput("features", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows, binary_data=True)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("label", "probability")]
    result = client.infer("iris", inputs, outputs=outputs)
    return [v.decode() for v in result.as_numpy("label")], result.as_numpy("probability")


def infer_grpc(port: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [triton_grpc.InferInput("features", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows)
    result = client.infer("iris", inputs)
    client.close()
    return [v.decode() for v in result.as_numpy("label")], result.as_numpy("probability")


BAD_REQUESTS = [
    (
        "/v2/models/rose/infer",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        404,
    ),
    (INFER, {"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}, 400),
    (INFER, {"inputs": [{"name": "petals", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, b'{"inputs": [{"name": "features",', 400),
    ("/predict", b"{]", 400),
]


def post_ready(served: Served) -> int:
    conn = served.connect()
    conn.request("GET", "/v2/health/ready")
    status = conn.getresponse().status
    conn.close()
    return status
