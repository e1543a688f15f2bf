"""The HTTP server, run as the artifact runs it: python -m kbuild.runtime serve."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.build import free_port
from tests.helpers.runtime import (
    SETOSA,
    TIMEOUT_S,
    VIRGINICA,
    Server,
    sha256,
    subprocess_env,
    write_guarded_iris,
)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPResponse]:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, json.loads(raw) if raw else None, resp


def recv_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read `count` responses (with Content-Length or 204) from a raw socket."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head, rest = buf[:end].decode("latin-1"), buf[end + 4 :]
            lines = head.split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            size = int(headers.get("content-length", "0"))
            if len(rest) >= size:
                out.append((int(lines[0].split(" ")[1]), headers, rest[:size]))
                buf = rest[size:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} responses")
        buf += chunk
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Server]:
    root = write_guarded_iris(tmp_path_factory.mktemp("http") / "root", models["onnx"])
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    yield srv
    assert srv.terminate() == 0


def test_predict_and_health(server: Server) -> None:
    conn = server.connect()
    assert request(conn, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert request(conn, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    status, body, resp = request(
        conn,
        "POST",
        "/predict",
        {"features": [SETOSA, VIRGINICA]},
        {"Content-Type": "application/json"},
    )
    assert status == 200 and resp.getheader("Content-Type") == "application/json"
    assert body["label"] == ["setosa", "virginica"]
    assert [round(p, 2) for p in body["probability"]] == [0.98, 0.92]
    # one record without the batch axis; outputs stay batched
    assert request(conn, "POST", "/predict?x=1", {"features": SETOSA})[1]["label"] == ["setosa"]
    # a record the pipeline drops: 204, no body
    status, body, resp = request(conn, "POST", "/predict", {"features": [0, 0, 0, 0]})
    assert (status, body, resp.getheader("Content-Length")) == (204, None, None)


@pytest.mark.parametrize(
    "method, path, body, status, error",
    [
        ("POST", "/predict", b'{"features": [1, 2', 400, "malformed JSON: "),
        ("POST", "/predict", b"\xff\xfe{}", 400, "malformed JSON: "),
        ("POST", "/predict", b"", 400, "empty request body; send a JSON object of named inputs"),
        ("POST", "/predict", [SETOSA], 400, "expected a JSON object of named inputs, got a list"),
        ("POST", "/predict", {}, 400, "missing input 'features'"),
        (
            "POST",
            "/predict",
            {"features": [SETOSA], "x": 1},
            400,
            "unknown input 'x' (inputs: features)",
        ),
        (
            "POST",
            "/predict",
            {"features": [[1, 2, 3]]},
            400,
            "input 'features': expected shape [-1, 4], got [1, 3]",
        ),
        (
            "POST",
            "/predict",
            {"features": [["a", "b", "c", "d"]]},
            400,
            "input 'features': expected numbers, got strings",
        ),
        (
            "POST",
            "/predict",
            {"features": [[1, 2, 3, 4], [1]]},
            400,
            "input 'features': nested lists must be rectangular (rows of equal length)",
        ),
        (
            "POST",
            "/predict",
            {"features": [[-1, 2, 3, 4]]},
            500,
            "step 'guard' (python) failed: ValueError: negative measurement",
        ),
        ("GET", "/predict", None, 405, "GET not allowed on /predict (allowed: POST)"),
        (
            "POST",
            "/v2/health/ready",
            b"{}",
            405,
            "POST not allowed on /v2/health/ready (allowed: GET)",
        ),
        ("GET", "/nope", None, 404, "no such path '/nope'"),
    ],
)
def test_errors_are_json_and_the_server_stays_up(
    server: Server, method: str, path: str, body: Any, status: int, error: str
) -> None:
    conn = server.connect()
    got_status, got_body, resp = request(conn, method, path, body)
    assert got_status == status
    assert got_body["error"].startswith(error)
    assert resp.getheader("Content-Type") == "application/json"
    if status == 405:
        assert resp.getheader("Allow") in ("POST", "GET")
    # same keep-alive connection: still ready, still predicting
    assert request(conn, "GET", "/v2/health/ready")[0] == 200
    assert request(conn, "POST", "/predict", {"features": [SETOSA]})[1]["label"] == ["setosa"]


def post(body: bytes, extra: str = "") -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(
            post(json.dumps({"features": [VIRGINICA]}).encode())
            + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
            + post(b'{"features": [[1, 2]]}')
            + post(json.dumps({"features": [SETOSA]}).encode())
        )
        responses = recv_responses(sock, 4)
    assert [r[0] for r in responses] == [200, 200, 400, 200]
    assert json.loads(responses[0][2])["label"] == ["virginica"]
    assert json.loads(responses[1][2]) == {"live": True}
    assert json.loads(responses[3][2])["label"] == ["setosa"]


def test_body_split_across_packets_and_expect_continue(server: Server) -> None:
    body = json.dumps({"features": [SETOSA]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        head = post(b"", "Expect: 100-continue\r\n")
        assert head.count(b"Content-Length: 0") == 1
        sock.sendall(head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body[:5])
        time.sleep(0.05)
        sock.sendall(body[5:])
        [(status, _, payload)] = recv_responses(sock, 1)
    assert status == 200 and json.loads(payload)["label"] == ["setosa"]


@pytest.mark.parametrize(
    "raw, status, error",
    [
        (
            b"POST /predict HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n",
            413,
            "request body of 67108865 bytes exceeds the limit of 67108864",
        ),
        (
            b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            411,
            "chunked request bodies are not supported; send Content-Length",
        ),
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported; use HTTP/1.1"),
        (
            b"POST /predict HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "invalid Content-Length",
        ),
        (
            b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
            431,
            "request head too large",
        ),
    ],
)
def test_unframeable_requests_get_an_error_and_a_closed_connection(
    server: Server, raw: bytes, status: int, error: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(raw)
        [(got, headers, body)] = recv_responses(sock, 1)
        assert (got, json.loads(body)) == (status, {"error": error})
        assert headers["connection"] == "close"
        assert sock.recv(10) == b""  # closed by the server
    conn = server.connect()
    assert request(conn, "GET", "/v2/health/ready")[0] == 200


def test_not_ready_while_loading_then_ready(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"], load_delay_s=3)
    srv = Server(root, "--http-port", "0").started()
    try:
        conn = srv.connect()
        assert request(conn, "GET", "/v2/health/live")[:2] == (200, {"live": True})
        assert request(conn, "GET", "/v2/health/ready")[:2] == (
            503,
            {"ready": False, "error": "not ready: models are loading"},
        )
        assert request(conn, "POST", "/predict", {"features": [SETOSA]})[:2] == (
            503,
            {"error": "not ready: models are loading"},
        )
        ready = srv.wait_event("ready")
        assert ready["load_s"] >= 3
        assert request(conn, "GET", "/v2/health/ready")[0] == 200
    finally:
        assert srv.terminate() == 0


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    srv = Server(root, "--http-port", "0").started()
    srv.wait_event("ready")
    idle = srv.connect()
    assert request(idle, "GET", "/v2/health/live")[0] == 200
    body = json.dumps({"features": [SETOSA]}).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(post(body)[:-10])  # a request half sent
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert srv.proc.poll() is None  # waiting for the request in flight
        sock.sendall(body[-10:])
        [(status, headers, payload)] = recv_responses(sock, 1)
    assert status == 200 and json.loads(payload)["label"] == ["setosa"]
    assert headers["connection"] == "close"
    assert srv.proc.wait(TIMEOUT_S) == 0
    stop = srv.wait_event("stop")
    assert stop["reason"] == "signal" and stop["level"] == "info"
    # one line per lifecycle event, none per request
    events = [json.loads(line)["event"] for line in srv.stderr_rest().splitlines()]
    assert events == ["start", "ready", "stop"]
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        request(idle, "GET", "/v2/health/live")


def test_a_model_that_does_not_match_its_hash_stops_the_server(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    spec["steps"][1]["sha256"] = "0" * 64
    spec_path.write_text(json.dumps(spec))
    srv = Server(root, "--http-port", "0")
    assert srv.proc.wait(TIMEOUT_S) == 3
    err = srv.stderr_rest()
    assert (
        f"error: step 'model' (onnx): model 'models/model/iris.onnx' has sha256 {sha256(models['onnx'])}, expected {'0' * 64}"
        in err
    )
    assert "Traceback" not in err


def test_port_from_pipeline_env_and_flag(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    from_spec, from_env = free_port(), free_port()
    spec["serve"] = {"http": {"host": "127.0.0.1", "port": from_spec}}
    spec_path.write_text(json.dumps(spec))

    srv = Server(root).started()
    assert srv.port == from_spec
    assert srv.terminate() == 0

    srv = Server(root, env=subprocess_env(KBUILD_HTTP_PORT=str(from_env))).started()
    try:
        assert srv.port == from_env
        # the port is taken now: a second server says so and exits
        clash = Server(root, "--http-port", str(from_env))
        assert clash.proc.wait(TIMEOUT_S) == 3
        assert f"error: http: cannot listen on 127.0.0.1:{from_env}: " in clash.stderr_rest()
    finally:
        assert srv.terminate() == 0


def test_a_client_that_half_closes_after_its_request_gets_the_answer(server: Server) -> None:
    body = json.dumps({"features": [SETOSA]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(post(body))
        sock.shutdown(socket.SHUT_WR)  # as some proxies and one-shot clients do
        [(status, _, answer)] = recv_responses(sock, 1)
        assert sock.recv(1) == b""  # then the server closes
    assert status == 200 and json.loads(answer)["label"] == ["setosa"]
