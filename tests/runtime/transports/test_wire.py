"""The HTTP/1.1 request-head parser and the response writer, in-process."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbuild.runtime.transports import wire
from kbuild.runtime.transports.wire import CONTINUE, HttpError, parse_head, response


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("latin-1")


def test_a_post_with_its_framing_headers() -> None:
    parsed = parse_head(
        head(
            "POST /v2/models/iris/infer?x=1 HTTP/1.1",
            "Host: a",
            "Content-Length: 12",
            "Inference-Header-Content-Length: 7",
            "Content-Encoding: GZIP",
            "Expect: 100-continue",
        )
    )
    assert parsed.method == "POST" and parsed.path == "/v2/models/iris/infer"
    assert parsed.content_length == 12 and parsed.inference_header_length == 7
    assert parsed.content_encoding == "gzip" and parsed.expect_continue and parsed.keep_alive


@pytest.mark.parametrize(
    "version, connection, keep_alive",
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
        ("HTTP/1.1", "Keep-Alive, Close", False),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(
    version: str, connection: str | None, keep_alive: bool
) -> None:
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
    ids=[
        "two-parts",
        "double-space",
        "not-http",
        "http2",
        "negative-length",
        "unicode-digit",
        "conflicting-lengths",
        "chunked",
        "space-before-colon",
        "folded-line",
        "no-colon",
        "bad-inference-length",
    ],
)
def test_unframeable_heads_are_refused_with_a_status(lines: list[str], status: int, phrase: str) -> None:
    with pytest.raises(HttpError) as refused:
        parse_head(head(*lines))
    assert refused.value.status == status and phrase in refused.value.message


_TOKEN = st.text("abcXYZ-!#_.~019", min_size=1, max_size=12)
_NAMES = (
    st.sampled_from(
        [
            "Content-Length",
            "content-length",
            "Connection",
            "Expect",
            "Content-Encoding",
            "Inference-Header-Content-Length",
            "Transfer-Encoding",
            "Host",
        ]
    )
    | _TOKEN
)
_VALUES = st.sampled_from(["12", " 7 ", "close", "Keep-Alive", "100-continue", "gzip", "x", "\t3", "-1", ""]) | st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=10
)


@given(
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.sampled_from(["/", "/v2/models/m/infer", "/v2/?a=b", "/x//"]),
    st.sampled_from(["0", "1", "9"]),
    st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
)
def test_plain_heads_read_as_the_line_by_line_parser_reads_them(
    method: str, target: str, minor: str, fields: list[tuple[str, str]]
) -> None:
    """A head the two regular expressions take (wire._PLAIN_HEAD) gives what
    the line-by-line parser, which words every fault, gives for it."""
    text = "\r\n".join([f"{method} {target} HTTP/1.{minor}", *(f"{n}:{v}" for n, v in fields)])
    plain = wire._PLAIN_HEAD.fullmatch(text)
    assert plain is not None
    assert wire._fields(text) == (method, target, minor, fields)
    framing = [(name, value) for name, value in fields if name.lower() in wire._FRAMING]
    assert wire._PLAIN_FRAMING.findall(plain.group(4)) == framing


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
