"""The HTTP/1.1 request-head parser and the response writer, in-process."""

from __future__ import annotations

import pytest

from kbuild.runtime.transports.wire import CONTINUE, HttpError, parse_head, response


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("latin-1")


def test_a_post_with_its_framing_headers() -> None:
    parsed = parse_head(head(
        "POST /v2/models/iris/infer?x=1 HTTP/1.1", "Host: a", "Content-Length: 12",
        "Inference-Header-Content-Length: 7", "Content-Encoding: GZIP", "Expect: 100-continue",
    ))  # fmt: skip
    assert parsed.method == "POST" and parsed.path == "/v2/models/iris/infer"
    assert parsed.content_length == 12 and parsed.inference_header_length == 7
    assert parsed.content_encoding == "gzip" and parsed.expect_continue and parsed.keep_alive


@pytest.mark.parametrize(
    "version, connection, keep_alive",
    [("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.0", None, False),
     ("HTTP/1.0", "keep-alive", True), ("HTTP/1.1", "Keep-Alive, Close", False)],
)  # fmt: skip
def test_keep_alive_follows_the_version_and_connection_header(version: str, connection: str | None, keep_alive: bool) -> None:
    lines = [f"GET / {version}"] + ([f"Connection: {connection}"] if connection else [])
    assert parse_head(head(*lines)).keep_alive is keep_alive


@pytest.mark.parametrize(
    "lines, status, phrase",
    [
        (["GET /"], 400, "malformed request line"),
        (["GET  / HTTP/1.1"], 400, "malformed request line"),
        (["GET / FTP/1.1"], 400, "malformed request line"),
        (["GET / HTTP/2.0"], 505, "HTTP/2.0 is not supported"),
        (["POST / HTTP/1.1", "Content-Length: -1"], 400, "invalid Content-Length"),
        (["POST / HTTP/1.1", "Content-Length: ²"], 400, "invalid Content-Length"),
        (["POST / HTTP/1.1", "Content-Length: 1", "Content-Length: 2"], 400, "invalid Content-Length"),
        (["POST / HTTP/1.1", "Transfer-Encoding: chunked"], 411, "chunked request bodies"),
        (["POST / HTTP/1.1", "Content-Length : 1"], 400, "malformed header line"),
        (["POST / HTTP/1.1", "Host: a", " folded"], 400, "malformed header line"),
        (["POST / HTTP/1.1", "no colon"], 400, "malformed header line"),
        (["POST / HTTP/1.1", "Inference-Header-Content-Length: x"], 400, "invalid Inference-Header-Content-Length"),
    ],
    ids=["two-parts", "double-space", "not-http", "http2", "negative-length", "unicode-digit", "conflicting-lengths",
         "chunked", "space-before-colon", "folded-line", "no-colon", "bad-inference-length"],
)  # fmt: skip
def test_unframeable_heads_are_refused_with_a_status(lines: list[str], status: int, phrase: str) -> None:
    with pytest.raises(HttpError) as refused:
        parse_head(head(*lines))
    assert refused.value.status == status and phrase in refused.value.message


def test_equal_repeated_lengths_are_one_length() -> None:
    assert parse_head(head("POST / HTTP/1.1", "Content-Length: 3", "Content-Length: 3")).content_length == 3


def test_responses_carry_length_type_and_close() -> None:
    raw = response(404, b'{"error": "x"}', keep_alive=False, headers=[("X-A", "1")])
    head_part, _, body = raw.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 404 Not Found\r\nDate: ")
    assert b"Content-Type: application/json\r\nContent-Length: 14\r\n" in head_part
    assert b"X-A: 1\r\n" in head_part and head_part.endswith(b"Connection: close")
    assert body == b'{"error": "x"}'
    assert response(200, b"abc", keep_alive=True, head_only=True).endswith(b"Content-Length: 3\r\n\r\n")
    assert b"Content-Length" not in response(204, b"", keep_alive=True)
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
