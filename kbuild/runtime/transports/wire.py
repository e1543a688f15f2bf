"""HTTP/1.1 framing: request heads in, responses out.

Kept apart from the connection logic so that a faster parser (httptools) can
replace parse_head() without touching routing or flow control.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from email.utils import formatdate
from typing import NamedTuple

MAX_HEAD_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request that cannot be framed; the connection is closed after the
    error response because the next request's start is unknown."""

    def __init__(self, status: int, message: str, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path  # where the head was read: the endpoint shapes the error


class RequestHead(NamedTuple):
    """A parsed request head (a named tuple: made on every request, and a
    tuple is the cheapest object to make)."""

    method: str
    path: str  # without the query string
    content_length: int
    keep_alive: bool
    expect_continue: bool
    # The binary tensor data extension: the length of the JSON part of the body.
    inference_header_length: int | None = None
    content_encoding: str = ""


_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
# A head as clients send it: a request line of HTTP/1.x and header lines whose
# names are RFC 9110 tokens. Such a head is read by two regular expressions;
# anything else goes through _fields(), which says what is wrong with it.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_PLAIN_HEAD = re.compile(r"([A-Z]+) ([^ \r\n]+) HTTP/1\.([0-9])((?:\r\n" + _TOKEN + r":[^\r\n]*)*)", re.ASCII)
# The header fields that frame a request or its body; the others are not read.
_FRAMING = frozenset(
    (
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "inference-header-content-length",
        "content-encoding",
    )
)
# Of a plain head's fields, only those are found (the loop below then skips
# none); _PLAIN_HEAD has already checked the others' form.
_PLAIN_FRAMING = re.compile(r"\r\n(" + "|".join(sorted(_FRAMING)) + r"):([^\r\n]*)", re.ASCII | re.IGNORECASE)


def parse_head(raw: bytes) -> RequestHead:
    """Parse the bytes before the blank line that ends a request head."""
    text = raw.decode("latin-1")
    plain = _PLAIN_HEAD.fullmatch(text)
    if plain is not None:
        method, target, minor, block = plain.groups()
        fields: list[tuple[str, str]] = _PLAIN_FRAMING.findall(block)
    else:
        method, target, minor, fields = _fields(text)
    content_length: int | None = None
    connection = ""
    expect = ""
    inference_header_length: int | None = None
    content_encoding = ""
    for name, value in fields:
        key = name.lower()
        if key not in _FRAMING:
            continue
        value = value.strip()
        if key == "content-length":
            # isascii: str.isdigit() also accepts digits that int() refuses, like "²".
            if not (value.isascii() and value.isdigit()) or (
                content_length is not None and int(value) != content_length
            ):
                raise HttpError(400, "invalid Content-Length")
            content_length = int(value)
        elif key == "transfer-encoding":
            raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
        elif key == "connection":
            connection = value.lower()
        elif key == "expect":
            expect = value.lower()
        elif key == "inference-header-content-length":
            if not (value.isascii() and value.isdigit()):
                raise HttpError(400, "invalid Inference-Header-Content-Length")
            inference_header_length = int(value)
        else:
            content_encoding = value.lower()
    # RFC 9110 6.2: a higher minor version of 1.x is answered as the highest we speak.
    if minor != "0":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return RequestHead(
        method,
        _path(target),
        content_length or 0,
        keep_alive,
        expect == "100-continue",
        inference_header_length,
        content_encoding,
    )


def _fields(text: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, minor version and header fields of a head that is not
    plain (see _PLAIN_HEAD): the request line and every header line checked
    one by one, and the first fault raised as HttpError."""
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HttpError(400, "malformed request line: the version must be HTTP/1.1 (or HTTP/1.0)")
    if match.group(1) != "1":
        raise HttpError(505, f"{version} is not supported; use HTTP/1.1")
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # Whitespace before the colon or a folded line is how request
        # smuggling starts; RFC 9112 says reject.
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        fields.append((name, value))
    return method, target, match.group(2), fields


def _path(target: str) -> str:
    """The target without its query, and without a trailing slash (/v2/ is /v2)."""
    path = target.split("?", 1)[0]
    return path.rstrip("/") or "/" if path.endswith("/") else path


_date_second = 0
_date_header = b""


def _date() -> bytes:
    # Formatting the date costs more than the rest of a response head; it only
    # changes once a second.
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
    return _date_header


def response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    content_type: str = "application/json",
    headers: Sequence[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    out = [_STATUS_LINES.get(status) or _status_line(status), _date()]
    if status != 204:
        type_line = _TYPE_LINES.get(content_type) or _type_line(content_type)
        out += (type_line, str(len(body)).encode("ascii"), b"\r\n")
    for name, value in headers:
        out.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    if status != 204 and not head_only:
        out.append(body)
    return b"".join(out)


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode("ascii")


def _type_line(content_type: str) -> bytes:
    """The Content-Type line and the start of the Content-Length line."""
    return f"Content-Type: {content_type}\r\nContent-Length: ".encode("ascii")


# The parts of a response head that repeat, made once.
_STATUS_LINES = {code: _status_line(code) for code in REASONS}
_TYPE_LINES = {kind: _type_line(kind) for kind in ("application/json", "application/octet-stream")}
