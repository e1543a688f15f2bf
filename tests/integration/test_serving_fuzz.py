"""A built artifact serving the iris pipeline over HTTP and gRPC with batching,
spoken to by clients we did not write (tritonclient, a Prometheus parser) and
by a property-based fuzzer."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.served import (
    INFER,
    Served,
    infer_http_json,
    iris_rows,
    model_answer,
    post_ready,
)

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)


_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


_numbers = st.floats(width=32) | st.integers(-(2**70), 2**70)


_data = (
    st.lists(_numbers | st.booleans() | st.text(max_size=3), max_size=12)
    | st.lists(st.lists(_numbers, min_size=4, max_size=4), max_size=3)
    | _json
)


_params = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "binary_data_output", "content_type"]) | st.text(max_size=6),
    _scalars,
    max_size=3,
)


_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["features", "features", "label", ""]) | st.text(max_size=6),
        "datatype": st.sampled_from(["FP32", "FP32", "FP64", "INT32", "BYTES", "BOOL", "fp32", ""]) | _scalars,
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
            st.fixed_dictionaries(
                {"name": st.sampled_from(["label", "probability", "x"])}, optional={"parameters": _params}
            ),
            max_size=3,
        )
        | _json,
    },
)


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
        request["outputs"] = [{"name": o, "parameters": {"binary_data": draw(st.booleans())}} for o in names]
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
            | st.integers(-1, 100).map(lambda n: {"Inference-Header-Content-Length": str(n) if n >= 0 else "x"}),
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
