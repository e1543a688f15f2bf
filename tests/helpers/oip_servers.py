"""Shared by the tests of transports/test_http_oip.py and its siblings."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.runtime import (
    Server,
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
def iris_server(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Server]:
    root = write_guarded_iris(tmp_path_factory.mktemp("oip") / "root", models["onnx"])
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    yield srv
    assert srv.terminate() == 0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = write_root(tmp_path_factory.mktemp("echo") / "root", ECHO, code={"echo": {"rt_echo.py": ECHO_CODE}})
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    yield srv
    assert srv.terminate() == 0
