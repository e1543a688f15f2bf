"""The Open Inference Protocol over HTTP, /metrics and /openapi.json, from a
server run as the artifact runs it, spoken to by raw HTTP and by Triton's own
client (tritonclient.http)."""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.helpers.runtime import (
    SETOSA,
    TIMEOUT_S,
    VIRGINICA,
    Server,
    subprocess_env,
    write_guarded_iris,
    write_root,
)

INFER = "/v2/models/iris/infer"

ECHO_CODE = """
import numpy as np


def make(config):
    def run(v):
        text = v["text"]
        upper = np.array([t.upper() for t in text.reshape(-1)], dtype=object).reshape(text.shape)
        total = v["counts"].sum(axis=1).astype(np.int64)
        return {"upper": upper, "total": total, "big": total > 3}

    return run
"""

ECHO = {
    "kbuild": 1,
    "name": "echo",
    "inputs": {
        "text": {"datatype": "BYTES", "shape": [-1]},
        "counts": {"datatype": "INT32", "shape": [-1, 2]},
    },
    "outputs": {
        "upper": {"datatype": "BYTES", "shape": [-1]},
        "total": {"datatype": "INT64", "shape": [-1]},
        "big": {"datatype": "BOOL", "shape": [-1]},
    },
    "steps": [{"name": "echo", "type": "python", "function": "rt_echo:make", "code": "rt_echo.py"}],
    "serve": {"http": {"host": "127.0.0.1", "max_body_bytes": 4096}},
}


def call(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPResponse, bytes]:
    conn = server.connect()
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    parsed: Any = None
    if raw and (resp.getheader("Content-Type") or "").startswith("application/json"):
        parsed = json.loads(raw)
    return resp.status, parsed, resp, raw


def infer_body(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}],
        **extra,
    }


@pytest.fixture(scope="module")
def iris_server(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[Server]:
    root = write_guarded_iris(tmp_path_factory.mktemp("oip") / "root", models["onnx"])
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    yield srv
    assert srv.terminate() == 0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = write_root(
        tmp_path_factory.mktemp("echo") / "root", ECHO, code={"echo": {"rt_echo.py": ECHO_CODE}}
    )
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    yield srv
    assert srv.terminate() == 0


def test_server_and_model_metadata(iris_server: Server) -> None:
    assert call(iris_server, "GET", "/v2")[1] == {
        "name": "kbuild",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    meta = {
        "name": "iris",
        "versions": ["1.0.0"],
        "platform": "kbuild",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
        ],
    }
    assert call(iris_server, "GET", "/v2/models/iris")[:2] == (200, meta)
    assert call(iris_server, "GET", "/v2/models/iris/versions/1.0.0")[:2] == (200, meta)
    assert call(iris_server, "GET", "/v2/models/iris/ready")[:2] == (
        200,
        {"name": "iris", "ready": True},
    )
    assert call(iris_server, "GET", "/v2/models/iris/versions/1.0.0/ready")[0] == 200
    assert call(iris_server, "GET", "/v2/models/rose")[:2] == (
        404,
        {"error": "unknown model 'rose' (this server serves 'iris')"},
    )
    assert call(iris_server, "GET", "/v2/models/iris/versions/2/ready")[:2] == (
        404,
        {"error": "model 'iris' has no version '2' (versions: 1.0.0)"},
    )
    assert call(iris_server, "GET", "/v2/models/iris/explain")[0] == 404


def test_infer_flat_and_nested_data_id_and_requested_outputs(iris_server: Server) -> None:
    flat = infer_body([[]], id="req-7")
    flat["inputs"][0].update(shape=[2, 4], data=[*SETOSA, *VIRGINICA])
    status, body, resp, _ = call(iris_server, "POST", INFER, flat)
    assert status == 200 and resp.getheader("Content-Type") == "application/json"
    assert body["model_name"] == "iris" and body["model_version"] == "1.0.0"
    assert body["id"] == "req-7"
    label, probability = body["outputs"]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }
    assert probability["name"] == "probability" and probability["shape"] == [2]
    assert [round(p, 2) for p in probability["data"]] == [0.98, 0.92]

    nested = infer_body([SETOSA, VIRGINICA], outputs=[{"name": "probability"}])
    nested["parameters"] = {"content_type": "np", "priority": 3}  # unknown ones are ignored
    status, body, _, _ = call(iris_server, "POST", "/v2/models/iris/versions/1.0.0/infer", nested)
    assert status == 200 and "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["probability"]
    assert body["outputs"][0]["data"] == probability["data"]


def test_bytes_ints_and_bools_as_json(echo: Server) -> None:
    body = {
        "inputs": [
            {"name": "counts", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["abc", "Grüße"]},
        ]
    }
    status, out, _, _ = call(echo, "POST", "/v2/models/echo/infer", body)
    assert status == 200 and "model_version" not in out
    assert out["outputs"] == [
        {"name": "upper", "datatype": "BYTES", "shape": [2], "data": ["ABC", "GRÜSSE"]},
        {"name": "total", "datatype": "INT64", "shape": [2], "data": [3, 7]},
        {"name": "big", "datatype": "BOOL", "shape": [2], "data": [False, True]},
    ]


def test_binary_tensor_data_by_hand(echo: Server) -> None:
    words = [b"ab", b"\xffraw"]
    text = b"".join(struct.pack("<I", len(w)) + w for w in words)
    counts = np.array([[1, 2], [5, 5]], dtype="<i4").tobytes()
    header = json.dumps(
        {
            "id": "b1",
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2],
                 "parameters": {"binary_data_size": len(text)}},
                {"name": "counts", "datatype": "INT32", "shape": [2, 2],
                 "parameters": {"binary_data_size": len(counts)}},
            ],
            "outputs": [
                {"name": "total", "parameters": {"binary_data": True}},
                {"name": "upper", "parameters": {"binary_data": True}},
                {"name": "big"},
            ],
        }
    ).encode()  # fmt: skip
    status, _, resp, raw = call(
        echo,
        "POST",
        "/v2/models/echo/infer",
        header + text + counts,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200
    assert resp.getheader("Content-Type") == "application/octet-stream"
    n = int(resp.getheader("Inference-Header-Content-Length") or "")
    head = json.loads(raw[:n])
    assert head["id"] == "b1"
    total, upper, big = head["outputs"]
    assert total == {"name": "total", "datatype": "INT64", "shape": [2],
                     "parameters": {"binary_data_size": 16}}  # fmt: skip
    assert big == {"name": "big", "datatype": "BOOL", "shape": [2], "data": [False, True]}
    rest = raw[n:]
    assert np.frombuffer(rest[:16], dtype="<i8").tolist() == [3, 10]
    expected = b"".join(struct.pack("<I", len(w)) + w for w in (b"AB", b"\xffRAW"))
    assert rest[16:] == expected and upper["parameters"]["binary_data_size"] == len(expected)

    # binary_data_output: every output binary unless one says otherwise
    header = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
                    {"name": "counts", "datatype": "INT32", "shape": [2, 2],
                     "parameters": {"binary_data_size": 16}}],
         "parameters": {"binary_data_output": True},
         "outputs": [{"name": "big"}, {"name": "upper", "parameters": {"binary_data": False}}]}
    ).encode()  # fmt: skip
    status, _, resp, raw = call(
        echo, "POST", "/v2/models/echo/infer", header + counts,
        {"Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    n = int(resp.getheader("Inference-Header-Content-Length") or "")
    big, upper = json.loads(raw[:n])["outputs"]
    assert big["parameters"] == {"binary_data_size": 2} and raw[n:] == b"\x00\x01"
    assert upper["data"] == ["X", "Y"]


def test_tritonclient_json_binary_and_compressed(echo: Server, iris_server: Server) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{echo.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("echo")
    assert client.get_model_metadata("echo")["inputs"][0] == {
        "name": "text",
        "datatype": "BYTES",
        "shape": [-1],
    }
    text = np.array([b"tri", b"ton"], dtype=np.object_)
    counts = np.array([[1, 1], [2, 9]], dtype=np.int32)
    for binary in (False, True):
        for compression in (None, "gzip", "deflate"):
            inputs = [
                triton.InferInput("text", [2], "BYTES"),
                triton.InferInput("counts", [2, 2], "INT32"),
            ]
            inputs[0].set_data_from_numpy(text, binary_data=binary)
            inputs[1].set_data_from_numpy(counts, binary_data=binary)
            outputs = [
                triton.InferRequestedOutput(n, binary_data=binary)
                for n in ("upper", "total", "big")
            ]
            result = client.infer(
                "echo", inputs, outputs=outputs, request_id="t",
                request_compression_algorithm=compression,
            )  # fmt: skip
            assert result.get_response()["id"] == "t"
            upper = result.as_numpy("upper")
            assert [u if isinstance(u, bytes) else u.encode() for u in upper] == [b"TRI", b"TON"]
            assert result.as_numpy("total").tolist() == [2, 11]
            assert result.as_numpy("big").tolist() == [False, True]
    iris_client = triton.InferenceServerClient(f"127.0.0.1:{iris_server.port}")
    with pytest.raises(InferenceServerException, match="unknown model 'echo'"):
        iris_client.infer("echo", inputs)


BAD = [
    (INFER, b'{"inputs": [', 400, "malformed JSON: "),
    (INFER, b"", 400, "malformed JSON: "),
    (INFER, b"[]", 400, "expected a JSON object with 'inputs', got a list"),
    (INFER, {"inputs": []}, 400, "'inputs' must be a non-empty list of tensors"),
    ("/v2/models/rose/infer", infer_body([SETOSA]), 404, "unknown model 'rose'"),
    (
        "/v2/models/iris/versions/9/infer",
        infer_body([SETOSA]),
        404,
        "model 'iris' has no version '9'",
    ),
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 4], "data": SETOSA}]},
        400,
        "input 'features': datatype FP64 does not match the model's FP32",
    ),
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
        400,
        "input 'features': expected shape [-1, 4], got [1, 3]",
    ),
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": SETOSA}]},
        400,
        "input 'features': 4 values for shape [2, 4], which needs 8",
    ),
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [0, 4], "data": []}]},
        400,
        "input 'features': shape [0, 4] holds no values",
    ),
    (
        INFER,
        {"inputs": [{"name": "petal", "datatype": "FP32", "shape": [1], "data": [1]}]},
        400,
        "unknown input 'petal' (inputs: features)",
    ),  # fmt: skip
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": ["a"] * 4}]},
        400,
        "input 'features': expected numbers, got strings",
    ),
    (
        INFER,
        infer_body([SETOSA], outputs=[{"name": "petals"}]),
        400,
        "unknown output 'petals' (outputs: label, probability)",
    ),  # fmt: skip
    (INFER, infer_body([SETOSA], id=7), 400, "'id' must be a string"),
    (
        INFER,
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4]}]},
        400,
        "input 'features': no 'data' and no binary_data_size",
    ),
    (INFER, infer_body([[-1, 2, 3, 4]]), 500, "step 'guard' (python) failed: ValueError"),
]


@pytest.mark.parametrize("path, body, status, error", BAD)
def test_bad_requests_get_json_errors_and_the_server_stays_ready(
    iris_server: Server, path: str, body: Any, status: int, error: str
) -> None:
    got, parsed, resp, _ = call(iris_server, "POST", path, body)
    assert (got, resp.getheader("Content-Type")) == (status, "application/json")
    assert parsed["error"].startswith(error), parsed
    assert call(iris_server, "GET", "/v2/health/ready")[0] == 200


def test_missing_input_and_binary_framing_errors(echo: Server) -> None:
    text_only = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
    assert call(echo, "POST", "/v2/models/echo/infer", text_only)[:2] == (
        400,
        {"error": "missing input 'counts'"},
    )
    header = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "counts", "datatype": "INT32", "shape": [1, 2],
                     "parameters": {"binary_data_size": 8}}]}
    ).encode()  # fmt: skip
    cases = [
        (header + b"\x00" * 7, len(header), "binary_data_size 8 runs past the end"),
        (header + b"\x00" * 9, len(header), "1 bytes of binary data are not claimed"),
        (header, len(header) + 1, "Inference-Header-Content-Length"),
        (header[:-3] + b"\x00" * 8, len(header) - 3, "malformed JSON"),
    ]
    for body, split, message in cases:
        status, parsed, _, _ = call(
            echo, "POST", "/v2/models/echo/infer", body,
            {"Inference-Header-Content-Length": str(split)},
        )  # fmt: skip
        assert status == 400 and message in parsed["error"], parsed


def test_body_limits_and_encodings(echo: Server) -> None:
    # serve.http.max_body_bytes is 4096 for this pipeline
    big = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                  "data": ["x" * 5000]}]}).encode()  # fmt: skip
    status, parsed, _, _ = call(echo, "POST", "/v2/models/echo/infer", big)
    assert status == 413
    assert parsed == {"error": f"request body of {len(big)} bytes exceeds the limit of 4096"}
    status, parsed, _, _ = call(
        echo, "POST", "/v2/models/echo/infer", gzip.compress(big), {"Content-Encoding": "gzip"}
    )
    assert (status, parsed) == (413, {"error": "decompressed body exceeds the limit of 4096 bytes"})
    status, parsed, _, _ = call(
        echo, "POST", "/v2/models/echo/infer", b"xx", {"Content-Encoding": "br"}
    )
    assert status == 415 and "'br' is not supported" in parsed["error"]
    status, parsed, _, _ = call(
        echo, "POST", "/v2/models/echo/infer", b"not zlib", {"Content-Encoding": "deflate"}
    )
    assert status == 400 and parsed["error"].startswith("cannot decompress the deflate body")
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["q"]},
                       {"name": "counts", "datatype": "INT32", "shape": [1, 2], "data": [1, 1]}]}  # fmt: skip
    status, parsed, _, _ = call(
        echo, "POST", "/v2/models/echo/infer", zlib.compress(json.dumps(body).encode()),
        {"Content-Encoding": "deflate"},
    )  # fmt: skip
    assert status == 200 and parsed["outputs"][0]["data"] == ["Q"]


def test_predict_is_unchanged(iris_server: Server) -> None:
    status, body, _, _ = call(iris_server, "POST", "/predict", {"features": [SETOSA, VIRGINICA]})
    assert status == 200 and body["label"] == ["setosa", "virginica"]
    status, body, resp, raw = call(iris_server, "POST", "/predict", {"features": [0, 0, 0, 0]})
    assert (status, raw) == (204, b"")


def test_metrics_are_prometheus_text(iris_server: Server) -> None:
    call(iris_server, "POST", INFER, infer_body([SETOSA]))
    call(iris_server, "POST", "/v2/models/rose/infer", infer_body([SETOSA]))
    status, _, resp, raw = call(iris_server, "GET", "/metrics")
    assert status == 200
    assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
    assert {
        "kbuild_requests",
        "kbuild_request_duration_seconds",
        "kbuild_requests_in_flight",
        "kbuild_batch_requests",
        "kbuild_batch_rows",
        "kbuild_pipeline_duration_seconds",
        "kbuild_model_load_seconds",
        "kbuild_ready",
        "kbuild_pipeline_info",
    } <= set(families)
    requests = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["kbuild_requests"].samples
        if s.name == "kbuild_requests_total"
    }
    assert requests[("infer", "200")] >= 1 and requests[("infer", "404")] >= 1
    latency = [s for s in families["kbuild_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["endpoint"] == "infer"]  # fmt: skip
    assert latency[0].value >= 2
    assert next(iter(families["kbuild_ready"].samples)).value == 1
    assert next(iter(families["kbuild_model_load_seconds"].samples)).value > 0
    batches = [s for s in families["kbuild_batch_rows"].samples if s.name.endswith("_count")]
    assert batches[0].value >= 1
    in_flight = families["kbuild_requests_in_flight"].samples
    assert [s.value for s in in_flight if s.labels["protocol"] == "http"] == [1]  # this scrape


def test_openapi_describes_the_pipeline(iris_server: Server) -> None:
    status, doc, _, _ = call(iris_server, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    assert {
        "/predict",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/ready",
        "/v2/models/iris/infer",
        "/v2/models/iris/versions/1.0.0/infer",
        "/metrics",
        "/openapi.json",
    } <= set(paths)
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["required"] == ["features"]
    features = predict["properties"]["features"]
    assert features["items"] == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
    }
    schemas = doc["components"]["schemas"]
    [tensor] = schemas["InferRequest"]["properties"]["inputs"]["items"]["oneOf"]
    assert tensor["properties"]["name"] == {"const": "features"}
    assert tensor["properties"]["datatype"] == {"const": "FP32"}
    outputs = schemas["InferResponse"]["properties"]["outputs"]["items"]["oneOf"]
    assert [o["properties"]["datatype"]["const"] for o in outputs] == ["BYTES", "FP32"]


def test_after_sigterm_readiness_turns_false_first(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_DRAIN_S="1.5")).started()
    srv.wait_event("ready")
    conn = srv.connect()
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().read() == b'{"ready":true}'
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # still answering, on the same connection and on new ones, but not ready
    conn.request("GET", "/v2/health/ready")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        503,
        {"ready": False, "error": "not ready: shutting down"},
    )
    assert call(srv, "GET", "/v2/models/iris/ready")[0] == 503
    status, body, _, _ = call(srv, "POST", INFER, infer_body([SETOSA]))
    assert status == 200 and body["outputs"][0]["data"] == ["setosa"]
    assert srv.proc.wait(TIMEOUT_S) == 0
    assert srv.wait_event("stop")["reason"] == "signal"


SLOW_CODE = """
import time


def make(config):
    def run(v):
        time.sleep(float(v["features"][0, 0]) / 10)  # 1.0 -> 100 ms
        return {}

    return run
"""


def test_a_request_past_its_timeout_gets_504_and_the_server_answers_meanwhile(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    spec["steps"][0].update(function="rt_slow:make", code="code/guard/rt_slow.py")
    spec["serve"] = {"http": {"host": "127.0.0.1", "timeout_ms": 500}}
    spec_path.write_text(json.dumps(spec))
    (root / "app" / "code" / "guard" / "rt_slow.py").write_text(SLOW_CODE)
    srv = Server(root, "--http-port", "0").started()
    try:
        srv.wait_event("ready")
        slow = srv.connect()
        started = time.monotonic()
        slow.request("POST", "/predict", body=json.dumps({"features": [[12, 1, 1, 1]]}))
        # while the 1.2-second call runs on the pipeline thread, the loop answers
        assert call(srv, "GET", "/v2/health/live")[0] == 200
        response = slow.getresponse()
        assert (response.status, json.loads(response.read())) == (
            504,
            {"error": "no answer within the request timeout of 0.5 s"},
        )
        assert 0.45 < time.monotonic() - started < 1.1
        time.sleep(1.2 - (time.monotonic() - started))  # the call in progress ends
        status, body, _, _ = call(srv, "POST", "/predict", {"features": [[1, 3, 1, 0.2]]})
        assert status == 200 and body["label"] == ["setosa"]
    finally:
        assert srv.terminate() == 0
