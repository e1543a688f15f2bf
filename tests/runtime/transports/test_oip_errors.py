"""The Open Inference Protocol over HTTP, /metrics and /openapi.json, from a
server run as the artifact runs it, spoken to by raw HTTP and by Triton's own
client (tritonclient.http)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from tests.helpers.oip_servers import INFER, call, infer_body
from tests.helpers.runtime import (
    SETOSA,
    Server,
)

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
    ),
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
    ),
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
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                {"name": "counts", "datatype": "INT32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            ]
        }
    ).encode()
    cases = [
        (header + b"\x00" * 7, len(header), "binary_data_size 8 runs past the end"),
        (header + b"\x00" * 9, len(header), "1 bytes of binary data are not claimed"),
        (header, len(header) + 1, "Inference-Header-Content-Length"),
        (header[:-3] + b"\x00" * 8, len(header) - 3, "malformed JSON"),
    ]
    for body, split, message in cases:
        status, parsed, _, _ = call(
            echo,
            "POST",
            "/v2/models/echo/infer",
            body,
            {"Inference-Header-Content-Length": str(split)},
        )
        assert status == 400 and message in parsed["error"], parsed


def test_body_limits_and_encodings(echo: Server) -> None:
    # serve.http.max_body_bytes is 4096 for this pipeline
    big = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x" * 5000]}]}).encode()
    status, parsed, _, _ = call(echo, "POST", "/v2/models/echo/infer", big)
    assert status == 413
    assert parsed == {"error": f"request body of {len(big)} bytes exceeds the limit of 4096"}
    status, parsed, _, _ = call(echo, "POST", "/v2/models/echo/infer", gzip.compress(big), {"Content-Encoding": "gzip"})
    assert (status, parsed) == (413, {"error": "decompressed body exceeds the limit of 4096 bytes"})
    status, parsed, _, _ = call(echo, "POST", "/v2/models/echo/infer", b"xx", {"Content-Encoding": "br"})
    assert status == 415 and "'br' is not supported" in parsed["error"]
    status, parsed, _, _ = call(echo, "POST", "/v2/models/echo/infer", b"not zlib", {"Content-Encoding": "deflate"})
    assert status == 400 and parsed["error"].startswith("cannot decompress the deflate body")
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["q"]},
            {"name": "counts", "datatype": "INT32", "shape": [1, 2], "data": [1, 1]},
        ]
    }
    status, parsed, _, _ = call(
        echo,
        "POST",
        "/v2/models/echo/infer",
        zlib.compress(json.dumps(body).encode()),
        {"Content-Encoding": "deflate"},
    )
    assert status == 200 and parsed["outputs"][0]["data"] == ["Q"]
