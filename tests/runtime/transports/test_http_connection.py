"""The HTTP server's connection protocol driven in-process: bytes in through
data_received, responses out through a fake transport. No sockets, no threads
of the test's own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from kbuild.runtime.transports.http import HttpEndpoint, _Connection
from tests.helpers.in_process import FakeTransport, scale_service, settle

INFER = b"/v2/models/scaler/infer"


def request(method: str, path: bytes, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {path.decode()} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def infer_body(*rows: list[float]) -> bytes:
    data = [v for row in rows for v in row]
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 2], "data": data}]}).encode()


def connect(tmp_path: Path) -> tuple[_Connection, FakeTransport]:
    service = scale_service(tmp_path)
    assert service.pipeline is not None and service.spec.serve.http is not None
    endpoint = HttpEndpoint(service, service.spec.serve.http)
    transport = FakeTransport()
    connection = _Connection(endpoint)
    connection.connection_made(transport)
    return connection, transport


def test_pipelined_requests_split_anywhere_are_answered_in_order(tmp_path: Path) -> None:
    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        connection, transport = connect(tmp_path)
        stream = (
            request("GET", b"/v2/health/live")
            + request("POST", INFER, infer_body([3.0, 6.0]))
            + request("POST", INFER, infer_body([1.0, 2.0], [5.0, 10.0]))
            + request("GET", b"/v2/models/scaler")
        )
        for i in range(0, len(stream), 7):  # seven bytes at a time
            connection.data_received(stream[i : i + 7])
        return await settle(transport, 4)

    (live, *_), first, second, metadata = asyncio.run(main())
    assert live == 200
    assert first[0] == 200 and json.loads(first[2])["outputs"][0]["data"] == [1.0, 1.0]
    assert second[0] == 200 and json.loads(second[2])["outputs"][0]["data"] == [0.0, 0.0, 2.0, 2.0]
    assert metadata[0] == 200 and json.loads(metadata[2])["name"] == "scaler"


def test_client_faults_get_json_errors_and_the_connection_goes_on(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        connection, transport = connect(tmp_path)
        connection.data_received(request("POST", INFER, b"{not json"))
        connection.data_received(request("POST", INFER, infer_body([1.0])))  # wrong shape
        connection.data_received(request("GET", b"/nowhere"))
        connection.data_received(request("DELETE", b"/v2/health/live"))
        connection.data_received(request("POST", INFER, infer_body([1.0, 2.0])))
        return await settle(transport, 5), transport

    answers, transport = asyncio.run(main())
    assert [status for status, _, _ in answers] == [400, 400, 404, 405, 200]
    for status, headers, body in answers[:4]:
        assert headers["content-type"] == "application/json" and "error" in json.loads(body), status
    assert not transport.closed


def test_a_body_over_the_limit_is_413_and_closes(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        connection, transport = connect(tmp_path)
        connection.data_received(request("POST", INFER, b"x" * 5000))  # serve.http.max_body_bytes is 4096
        return await settle(transport, 1), transport

    [(status, headers, body)], transport = asyncio.run(main())
    assert status == 413 and "4096" in json.loads(body)["error"]
    assert headers.get("connection") == "close"


def test_a_malformed_head_is_400_and_the_connection_ends(tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
        connection, transport = connect(tmp_path)
        connection.data_received(b"GARBAGE\r\n\r\n")
        connection.data_received(request("GET", b"/v2/health/live"))  # after the error: ignored
        await asyncio.sleep(0.05)
        return transport.responses(), transport

    answers, transport = asyncio.run(main())
    assert [status for status, _, _ in answers] == [400]
    assert "malformed request line" in json.loads(answers[0][2])["error"]
    assert transport.eof or transport.closed


def test_expect_continue_is_answered_before_the_body(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, list[tuple[int, dict[str, str], bytes]]]:
        connection, transport = connect(tmp_path)
        body = infer_body([1.0, 2.0])
        full = request("POST", INFER, body, "Expect: 100-continue")
        connection.data_received(full[: -len(body)])
        await asyncio.sleep(0.01)
        interim = bytes(transport.written)
        connection.data_received(body)
        return interim, await settle(transport, 2)

    interim, answers = asyncio.run(main())
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert [status for status, _, _ in answers] == [100, 200]
