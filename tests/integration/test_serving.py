"""A built artifact serving the iris pipeline over HTTP and gRPC with batching,
spoken to by clients we did not write (tritonclient, a Prometheus parser) and
by a property-based fuzzer."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.helpers.build import EXAMPLES, Built, copy_example, free_port, http_connection, wait_ready

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
            [sys.executable, str(iris_serving.artifact), "serve",
             "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
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

    session = ort.InferenceSession(
        str(EXAMPLES / "iris" / "models" / "iris.onnx"), providers=["CPUExecutionProvider"]
    )
    probs = session.run(["probabilities"], {"float_input": rows.astype(np.float32)})[0]
    return [LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def iris_rows(n: int) -> np.ndarray:
    from sklearn.datasets import load_iris

    x = load_iris().data.astype(np.float32)
    rng = np.random.default_rng(7)
    extra = x[rng.integers(0, len(x), max(0, n - len(x)))] + rng.normal(
        0, 0.3, (max(0, n - len(x)), 4)
    )
    return np.concatenate([x, extra.astype(np.float32)])[:n]


def post(
    served: Served, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
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
    outputs = [
        triton_http.InferRequestedOutput(n, binary_data=False) for n in ("label", "probability")
    ]
    result = client.infer("iris", inputs, outputs=outputs)
    return [str(v) for v in result.as_numpy("label")], result.as_numpy("probability")


def infer_http_binary(port: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [triton_http.InferInput("features", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows, binary_data=True)
    outputs = [
        triton_http.InferRequestedOutput(n, binary_data=True) for n in ("label", "probability")
    ]
    result = client.infer("iris", inputs, outputs=outputs)
    return [v.decode() for v in result.as_numpy("label")], result.as_numpy("probability")


def infer_grpc(port: int, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [triton_grpc.InferInput("features", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows)
    result = client.infer("iris", inputs)
    client.close()
    return [v.decode() for v in result.as_numpy("label")], result.as_numpy("probability")


def test_model_metadata_matches_the_spec(served: Served) -> None:
    expected_inputs = [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    expected_outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
    ]
    http_client = triton_http.InferenceServerClient(f"127.0.0.1:{served.http_port}")
    meta = http_client.get_model_metadata("iris")
    assert (meta["name"], meta["versions"]) == ("iris", ["1.0.0"])
    assert (meta["inputs"], meta["outputs"]) == (expected_inputs, expected_outputs)
    grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    meta_g = grpc_client.get_model_metadata("iris")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta_g.inputs] == [
        ("features", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta_g.outputs] == [
        ("label", "BYTES", [-1]),
        ("probability", "FP32", [-1]),
    ]
    assert grpc_client.is_server_ready() and grpc_client.is_model_ready("iris")
    grpc_client.close()


@pytest.mark.parametrize("how", [infer_http_json, infer_http_binary, infer_grpc])
def test_triton_clients_get_the_models_answers(served: Served, how: Any) -> None:
    rows = iris_rows(150)[::7]
    labels, probs = model_answer(rows)
    port = served.grpc_port if how is infer_grpc else served.http_port
    got_labels, got_probs = how(port, rows)
    assert got_labels == labels
    np.testing.assert_allclose(got_probs, probs, rtol=1e-6)


def test_grpc_typed_contents(served: Served) -> None:
    rows = iris_rows(3)
    request = pb.ModelInferRequest(model_name="iris", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=TIMEOUT_S)
    labels, probs = model_answer(rows)
    label, probability = response.outputs
    assert [b.decode() for b in label.contents.bytes_contents] == labels
    np.testing.assert_allclose(list(probability.contents.fp32_contents), probs, rtol=1e-6)
    assert response.id == "typed"


def test_200_requests_from_16_clients_each_get_their_own_answer(served: Served) -> None:
    rows = iris_rows(200)
    labels, probs = model_answer(rows)
    ways = [infer_http_json, infer_http_binary, infer_grpc]

    def client(k: int) -> list[tuple[int, list[str], np.ndarray]]:
        how = ways[k % len(ways)]
        port = served.grpc_port if how is infer_grpc else served.http_port
        return [(i, *how(port, rows[i : i + 1])) for i in range(k, len(rows), 16)]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client, range(16)) for a in batch]
    assert sorted(i for i, _, _ in answers) == list(range(200))
    for i, label, prob in answers:
        assert label == [labels[i]], i
        np.testing.assert_allclose(prob, probs[i : i + 1], rtol=1e-6)


BAD_REQUESTS = [
    ("/v2/models/rose/infer", {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 404),
    (INFER, {"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}, 400),
    (INFER, {"inputs": [{"name": "petals", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}]}, 400),
    (INFER, b'{"inputs": [{"name": "features",', 400),
    ("/predict", b"{]", 400),
]  # fmt: skip


@pytest.mark.parametrize("path, body, status", BAD_REQUESTS)
def test_bad_requests_get_4xx_json_and_the_server_stays_ready(
    served: Served, path: str, body: Any, status: int
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, raw = post(served, path, data)
    assert got == status and json.loads(raw)["error"]
    assert post_ready(served) == 200


def test_an_oversized_body_gets_413(served: Served) -> None:
    conn = served.connect()
    conn.putrequest("POST", INFER)
    conn.putheader("Content-Length", str(64 * 1024 * 1024 + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {
        "error": "request body of 67108865 bytes exceeds the limit of 67108864"
    }
    conn.close()
    assert post_ready(served) == 200


def post_ready(served: Served) -> int:
    conn = served.connect()
    conn.request("GET", "/v2/health/ready")
    status = conn.getresponse().status
    conn.close()
    return status


# -- fuzzing: whatever a client sends, the answer is never a 5xx

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_numbers = st.floats(width=32) | st.integers(-(2**70), 2**70)
_data = (
    st.lists(_numbers | st.booleans() | st.text(max_size=3), max_size=12)
    | st.lists(st.lists(_numbers, min_size=4, max_size=4), max_size=3)
    | _json
)
_params = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "binary_data_output", "content_type"])
    | st.text(max_size=6),
    _scalars,
    max_size=3,
)
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["features", "features", "label", ""]) | st.text(max_size=6),
        "datatype": st.sampled_from(["FP32", "FP32", "FP64", "INT32", "BYTES", "BOOL", "fp32", ""])
        | _scalars,
        "shape": st.lists(st.integers(-2, 6), max_size=4) | st.just([1, 4]) | _json,
    },
    optional={"data": _data, "parameters": _params},
)
_request = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor, max_size=3) | _json},
    optional={
        "id": st.text(max_size=8) | _scalars,
        "parameters": _params | _json,
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["label", "probability", "x"])},
                                  optional={"parameters": _params}),
            max_size=3,
        ) | _json,
    },
)  # fmt: skip
_junk = (
    _request.map(lambda r: json.dumps(r).encode())
    | _json.map(lambda r: json.dumps(r).encode())
    | st.binary(max_size=64)
)


@st.composite
def _near_valid(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A well-formed request (JSON or binary, flat or nested, /predict or
    infer), sometimes with one thing wrong: these reach the model."""
    n = draw(st.integers(1, 3))
    values = draw(st.lists(st.floats(width=32), min_size=4 * n, max_size=4 * n))
    nested = [values[i : i + 4] for i in range(0, 4 * n, 4)]
    if draw(st.booleans()):
        return "/predict", json.dumps({"features": nested}).encode(), {}
    tensor: dict[str, Any] = {"name": "features", "datatype": "FP32", "shape": [n, 4]}
    request: dict[str, Any] = {"inputs": [tensor]}
    raw = b""
    if draw(st.booleans()):
        raw = np.array(values, dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = draw(st.sampled_from([values, nested]))
    names = draw(st.lists(st.sampled_from(["label", "probability"]), unique=True, max_size=2))
    if names:
        request["outputs"] = [
            {"name": o, "parameters": {"binary_data": draw(st.booleans())}} for o in names
        ]
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=8))
    wrong = draw(st.sampled_from(["", "", "", "shape", "datatype", "size", "name", "extra"]))
    if wrong == "shape":
        tensor["shape"] = draw(st.lists(st.integers(0, 5), max_size=3))
    elif wrong == "datatype":
        tensor["datatype"] = draw(st.sampled_from(["FP16", "FP64", "INT32", "BYTES", "BOOL"]))
    elif wrong == "size" and raw:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif wrong == "name":
        tensor["name"] = draw(st.text(max_size=5))
    elif wrong == "extra":
        request["inputs"].append(dict(tensor))
    header = json.dumps(request).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if raw else {}
    return INFER, header + raw, headers


@dataclass
class _Client:
    served: Served
    conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self.served.connect()
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection") == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, data
            except (ConnectionError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def test_fuzzed_requests_never_get_a_5xx(served: Served) -> None:
    client = _Client(served)
    seen: dict[int, int] = {}

    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        case=_near_valid()
        | st.tuples(
            st.sampled_from([INFER, "/predict", "/v2/models/iris/versions/1.0.0/infer"]),
            _junk,
            st.none()
            | st.integers(-1, 100).map(
                lambda n: {"Inference-Header-Content-Length": str(n) if n >= 0 else "x"}
            ),
        ).map(lambda c: (c[0], c[1], c[2] or {}))
    )
    def check(case: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = case
        status, data = client.post(path, body, {"Content-Type": "application/json", **headers})
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (status, body, data)
        if status >= 400:
            assert isinstance(json.loads(data)["error"], str)

    check()
    assert sum(seen.values()) >= 1000
    assert seen.get(200, 0) > 100 and seen.get(400, 0) > 100, seen  # both kinds were explored
    assert post_ready(served) == 200
    rows = iris_rows(2)
    assert infer_http_json(served.http_port, rows)[0] == model_answer(rows)[0]


def test_metrics_are_prometheus_text(served: Served) -> None:
    infer_grpc(served.grpc_port, iris_rows(1))
    conn = served.connect()
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    assert (response.getheader("Content-Type") or "").startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    requests = {
        (s.labels["protocol"], s.labels["endpoint"], s.labels["status"])
        for s in families["kbuild_requests"].samples
    }
    assert ("grpc", "ModelInfer", "OK") in requests
    assert ("http", "infer", "200") in requests
    assert {"kbuild_batch_rows", "kbuild_request_duration_seconds", "kbuild_model_load_seconds",
            "kbuild_requests_in_flight"} <= set(families)  # fmt: skip


def test_only_artifacts_that_serve_grpc_carry_it(iris_onnx: Built, iris_serving: Built) -> None:
    for built, with_grpc in ((iris_onnx, False), (iris_serving, True)):
        with zipfile.ZipFile(built.artifact) as zf:
            names = zf.namelist()
        wheels = [n for n in names if n.startswith("wheels/")]
        assert any("grpcio" in n for n in wheels) is with_grpc
        assert ("site/kbuild/runtime/transports/grpc.py" in names) is with_grpc
        assert ("site/kbuild/runtime/transports/oip_proto.py" in names) is with_grpc
        assert "site/kbuild/runtime/transports/http.py" in names


def test_the_pipeline_schema_knows_the_serving_settings(tmp_path: Path) -> None:
    import yaml

    from kbuild.errors import SpecError
    from kbuild.spec import load_pipeline

    folder = copy_example("iris", tmp_path)
    document = yaml.safe_load((folder / "pipeline.yaml").read_text())
    document["serve"] = {
        "http": {"port": 8080, "max_body_bytes": 1 << 20, "timeout_ms": 2500},
        "grpc": {"port": 8081, "max_message_bytes": 1 << 20, "timeout_ms": 1000},
        "batching": {"max_batch_size": 8, "max_latency_ms": 0.5},
    }
    path = folder / "serving.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_pipeline(path).serve == document["serve"]
    document["serve"]["http"]["max_body"] = 10
    document["serve"]["grpc"]["timeout_ms"] = 0
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as e:
        load_pipeline(path)
    text = str(e.value) + " ".join(map(str, getattr(e.value, "problems", ())))
    assert "max_body" in text and "timeout_ms" in text
