"""What a hostile or unlucky client sends, through the connection protocol
in-process: strict JSON both ways, half-closed clients, HTTP versions, slow
clients, too many connections, and a property over arbitrary request heads."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbuild.runtime.contract.serve import HttpSettings
from kbuild.runtime.transports.http import HttpEndpoint, _Connection
from kbuild.runtime.transports.wire import HttpError, parse_head
from tests.helpers.in_process import SCALE_PIPELINE, FakeTransport, scale_service, settle

INFER = b"/v2/models/scaler/infer"


def request(method: str, path: bytes, body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    head = [f"{method} {path.decode()} {version}", "Host: test", f"Content-Length: {len(body)}"]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def serve(tmp_path: Path, **settings: Any) -> tuple[HttpEndpoint, list[tuple[_Connection, FakeTransport]]]:
    """An endpoint over the scale pipeline, and a list its connections join."""
    document = json.loads(json.dumps(SCALE_PIPELINE))
    service = scale_service(tmp_path, document)
    assert service.spec.serve.http is not None
    http = HttpSettings(**{**service.spec.serve.http.__dict__, **settings})
    return HttpEndpoint(service, http), []


def connect(endpoint: HttpEndpoint) -> tuple[_Connection, FakeTransport]:
    connection, transport = _Connection(endpoint), FakeTransport()
    connection.connection_made(transport)
    return connection, transport


def answers(tmp_path: Path, *chunks: bytes, count: int, **settings: Any) -> list[tuple[int, dict[str, str], bytes]]:
    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        endpoint, _ = serve(tmp_path, **settings)
        connection, transport = connect(endpoint)
        for chunk in chunks:
            connection.data_received(chunk)
        return await settle(transport, count)

    return asyncio.run(main())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-2E+999"])
def test_non_finite_json_numbers_are_400_naming_the_input(tmp_path: Path, literal: str) -> None:
    body = b'{"x": [[1.0, ' + literal.encode() + b"]]}"
    [(status, _, reply)] = answers(tmp_path, request("POST", b"/predict", body), count=1)
    error = json.loads(reply)["error"]
    assert status == 400 and error.startswith("input 'x': ") and "RFC 8259" in error
    assert literal in error or "inf" in error  # 1e400 reads as infinity


def test_non_finite_outputs_are_null_and_the_answer_is_strict_json(tmp_path: Path) -> None:
    # (3e38 - -3e38) / 1 overflows float32: the scale step's answer is inf
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [3e38, 1.0]}]}).encode()
    document = {**SCALE_PIPELINE, "steps": [{**SCALE_PIPELINE["steps"][0], "mean": [-3e38, 0.0], "std": [1.0, 1.0]}]}

    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        service = scale_service(tmp_path, document)
        assert service.spec.serve.http is not None
        connection, transport = connect(HttpEndpoint(service, service.spec.serve.http))
        connection.data_received(request("POST", INFER, body) + request("POST", b"/predict", b'{"x": [[3e38, 1.0]]}'))
        return await settle(transport, 2)

    with warnings.catch_warnings():  # numpy says so when float32 overflows: that is the point here
        warnings.simplefilter("ignore", RuntimeWarning)
        infer, predict = asyncio.run(main())
    assert infer[0] == 200 and json.loads(infer[2])["outputs"][0]["data"] == [None, 1.0]
    assert predict[0] == 200 and json.loads(predict[2]) == {"y": [[None, 1.0]]}
    for _, _, raw in (infer, predict):
        json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in an answer"))


def test_a_half_closed_client_gets_its_answers_then_the_close(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        endpoint, _ = serve(tmp_path)
        connection, transport = connect(endpoint)
        connection.data_received(
            request(
                "POST",
                INFER,
                json.dumps(
                    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [3.0, 6.0]}]}
                ).encode(),
            )
        )
        assert connection.eof_received() is True  # keep the transport open for the answer
        return await settle(transport, 1), transport

    [(status, _, _)], transport = asyncio.run(main())
    assert status == 200 and transport.closed


def test_a_request_cut_short_by_the_close_is_400(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        endpoint, _ = serve(tmp_path)
        connection, transport = connect(endpoint)
        connection.data_received(request("POST", b"/predict", b'{"x": [[1, 2]]}')[:-4])
        connection.eof_received()
        return await settle(transport, 1), transport

    [(status, _, body)], _ = asyncio.run(main())
    assert status == 400 and "before the request was complete" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "version, status",
    [
        ("HTTP/1.1", 200),
        ("HTTP/1.0", 200),
        ("HTTP/1.2", 200),
        ("HTTP/1.9", 200),
        ("HTTP/2.0", 505),
        ("HTTP/0.9", 505),
        ("HTTP/1", 400),
        ("HTTP/1.x", 400),
        ("http/1.1", 400),
        ("HTTP/11.1", 400),
    ],
)
def test_versions_per_rfc_9110(tmp_path: Path, version: str, status: int) -> None:
    [(got, _, _)] = answers(tmp_path, request("GET", b"/v2/health/live", version=version), count=1)
    assert got == status


def test_v2_with_a_trailing_slash_is_v2(tmp_path: Path) -> None:
    plain, slash = answers(tmp_path, request("GET", b"/v2"), request("GET", b"/v2/"), count=2)
    assert plain[0] == slash[0] == 200 and plain[2] == slash[2]


def test_a_slow_head_gets_408_and_the_connection_closes(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        endpoint, _ = serve(tmp_path, header_timeout_s=0.05)
        connection, transport = connect(endpoint)
        for byte in b"GET /v2/health/live HTTP/1.1\r\n":  # a byte at a time: no deadline moves
            connection.data_received(bytes([byte]))
            await asyncio.sleep(0.005)
        return await settle(transport, 1), transport

    [(status, _, body)], transport = asyncio.run(main())
    assert status == 408 and "request head did not arrive within 0.05 s" in json.loads(body)["error"]


def test_a_slow_body_gets_408(tmp_path: Path) -> None:
    [(status, _, body)] = answers(
        tmp_path, request("POST", b"/predict", b'{"x": [[1, 2]]}')[:-3], count=1, body_timeout_s=0.05
    )
    assert status == 408 and "request body" in json.loads(body)["error"]


def test_an_idle_connection_is_closed_quietly(tmp_path: Path) -> None:
    async def main() -> FakeTransport:
        endpoint, _ = serve(tmp_path, idle_timeout_s=0.05)
        connection, transport = connect(endpoint)
        connection.data_received(request("GET", b"/v2/health/live"))
        await settle(transport, 1)
        await asyncio.sleep(0.2)
        return transport

    transport = asyncio.run(main())
    assert transport.closed and len(transport.responses()) == 1


def test_connections_past_the_cap_get_503(tmp_path: Path) -> None:
    async def main() -> list[FakeTransport]:
        endpoint, _ = serve(tmp_path, max_connections=2)
        return [connect(endpoint)[1] for _ in range(3)]

    first, second, third = asyncio.run(main())
    assert not first.closed and not second.closed
    [(status, _, body)] = third.responses()
    assert status == 503 and "max_connections is 2" in json.loads(body)["error"] and third.closed


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_head_parses_or_is_an_http_error(raw: bytes) -> None:
    try:
        head = parse_head(raw)
    except HttpError as error:
        assert 400 <= error.status < 600 and error.message
    else:
        assert head.path.startswith("/") or head.path and head.content_length >= 0
