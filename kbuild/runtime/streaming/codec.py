"""Record encodings: json, msgpack, raw.

json and msgpack carry a value (for pipelines, an object of named inputs or
outputs); raw carries the record's bytes unchanged. msgpack is imported only
when a topic uses it, so artifacts that do not need it do not carry it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

import numpy as np

from kbuild.runtime.errors import LoadError

ENCODINGS = ("json", "msgpack", "raw")


class CodecError(ValueError):
    """A value that cannot be decoded or encoded."""


class Codec(Protocol):
    name: str

    def decode(self, data: bytes) -> Any: ...

    def encode(self, value: Any) -> bytes: ...


def plain(value: Any) -> Any:
    """NumPy values (which user code returns freely) as plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not serializable")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    return plain(value)


class JsonCodec:
    name = "json"

    def decode(self, data: bytes) -> Any:
        try:
            # JSON on the wire is UTF-8 (RFC 8259); decoding first skips
            # json.loads' encoding detection, half the cost of a small record.
            return json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise CodecError(f"malformed JSON: {e}") from None

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), default=_json_default).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise CodecError(f"cannot encode as JSON: {e}") from None


class MsgpackCodec:
    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack  # type: ignore[import-untyped]
        except ModuleNotFoundError:
            raise LoadError(
                "the msgpack encoding needs the Python module 'msgpack', which is not installed"
            ) from None
        self._msgpack: Any = msgpack

    def decode(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False)
        except Exception as e:  # msgpack raises several unrelated types
            raise CodecError(f"malformed msgpack: {type(e).__name__}: {e}") from None

    def encode(self, value: Any) -> bytes:
        try:
            packed: bytes = self._msgpack.packb(value, default=plain, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as e:
            raise CodecError(f"cannot encode as msgpack: {e}") from None
        return packed


class RawCodec:
    name = "raw"

    def decode(self, data: bytes) -> Any:
        return data

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
            return value.tobytes()
        raise CodecError(f"the raw encoding sends bytes or text, got {type(value).__name__}")


def codec(encoding: str) -> Codec:
    if encoding == "json":
        return JsonCodec()
    if encoding == "msgpack":
        return MsgpackCodec()
    if encoding == "raw":
        return RawCodec()
    raise LoadError(f"unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})")
