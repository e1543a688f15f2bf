"""The Open Inference Protocol over HTTP, /metrics and /openapi.json, from a
server run as the artifact runs it, spoken to by raw HTTP and by Triton's own
client (tritonclient.http)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers.oip_servers import INFER, call, infer_body
from tests.helpers.runtime import (
    SETOSA,
    VIRGINICA,
    Server,
)


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
                {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(text)}},
                {
                    "name": "counts",
                    "datatype": "INT32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": len(counts)},
                },
            ],
            "outputs": [
                {"name": "total", "parameters": {"binary_data": True}},
                {"name": "upper", "parameters": {"binary_data": True}},
                {"name": "big"},
            ],
        }
    ).encode()
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
    assert total == {"name": "total", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
    assert big == {"name": "big", "datatype": "BOOL", "shape": [2], "data": [False, True]}
    rest = raw[n:]
    assert np.frombuffer(rest[:16], dtype="<i8").tolist() == [3, 10]
    expected = b"".join(struct.pack("<I", len(w)) + w for w in (b"AB", b"\xffRAW"))
    assert rest[16:] == expected and upper["parameters"]["binary_data_size"] == len(expected)

    # binary_data_output: every output binary unless one says otherwise
    header = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
                {"name": "counts", "datatype": "INT32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
            ],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "big"}, {"name": "upper", "parameters": {"binary_data": False}}],
        }
    ).encode()
    status, _, resp, raw = call(
        echo,
        "POST",
        "/v2/models/echo/infer",
        header + counts,
        {"Inference-Header-Content-Length": str(len(header))},
    )
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
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("upper", "total", "big")]
            result = client.infer(
                "echo",
                inputs,
                outputs=outputs,
                request_id="t",
                request_compression_algorithm=compression,
            )
            assert result.get_response()["id"] == "t"
            upper = result.as_numpy("upper")
            assert [u if isinstance(u, bytes) else u.encode() for u in upper] == [b"TRI", b"TON"]
            assert result.as_numpy("total").tolist() == [2, 11]
            assert result.as_numpy("big").tolist() == [False, True]
    iris_client = triton.InferenceServerClient(f"127.0.0.1:{iris_server.port}")
    with pytest.raises(InferenceServerException, match="unknown model 'echo'"):
        iris_client.infer("echo", inputs)
