"""Record encodings: json, msgpack, raw.

json and msgpack carry a value (for pipelines, an object of named inputs or
outputs); raw carries the record's bytes unchanged. Each library is imported
only when a topic uses it, so artifacts that do not need it do not carry it.

JSON goes through orjson: on a stream every record is decoded and encoded,
and for an iris record the standard library takes 2.3 + 2.9 µs where orjson
takes 0.23 + 0.17 µs (bench/streaming.py measures the whole path). It is also
stricter where JSON is: NaN and Infinity are refused on input and written as
null, and text must be valid UTF-8.
"""

from __future__ import annotations

import base64
import functools
import importlib
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.contract.kafka import ENCODINGS


class CodecError(ValueError):
    """A value that cannot be decoded or encoded."""


class Codec(Protocol):
    name: str

    def decode(self, data: bytes) -> Any: ...

    def encode(self, value: Any) -> bytes: ...

    # A micro-batch at once, without a Python frame per record; CodecError
    # when any of them fails (the caller then takes them one by one).
    def decode_many(self, data: Iterable[bytes | None]) -> list[Any]: ...

    def encode_many(self, values: Iterable[Any]) -> list[bytes]: ...


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

    def __init__(self) -> None:
        orjson = _library("orjson", "json")
        self._loads = orjson.loads
        self._dumps = functools.partial(orjson.dumps, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
        self._decode_error: type[Exception] = orjson.JSONDecodeError
        self._encode_error: type[Exception] = orjson.JSONEncodeError

    def decode(self, data: bytes) -> Any:
        try:
            return self._loads(data)
        except self._decode_error as e:
            raise CodecError(f"malformed JSON: {e}") from None

    def encode(self, value: Any) -> bytes:
        try:
            encoded: bytes = self._dumps(value)
        except self._encode_error as e:
            raise CodecError(f"cannot encode as JSON: {e}") from None
        return encoded

    def decode_many(self, data: Iterable[bytes | None]) -> list[Any]:
        try:
            return list(map(self._loads, data))
        except self._decode_error as e:
            raise CodecError(f"malformed JSON: {e}") from None

    def encode_many(self, values: Iterable[Any]) -> list[bytes]:
        try:
            return list(map(self._dumps, values))
        except self._encode_error as e:
            raise CodecError(f"cannot encode as JSON: {e}") from None


class MsgpackCodec:
    name = "msgpack"

    def __init__(self) -> None:
        self._msgpack = _library("msgpack", "msgpack")

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

    def decode_many(self, data: Iterable[bytes | None]) -> list[Any]:
        return [self.decode(d) if d is not None else _no_value() for d in data]

    def encode_many(self, values: Iterable[Any]) -> list[bytes]:
        return list(map(self.encode, values))


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
            return little_endian(value)
        raise CodecError(f"the raw encoding sends bytes or text, got {type(value).__name__}")

    def decode_many(self, data: Iterable[bytes | None]) -> list[Any]:
        return [d if d is not None else _no_value() for d in data]

    def encode_many(self, values: Iterable[Any]) -> list[bytes]:
        return list(map(self.encode, values))


def little_endian(arr: np.ndarray) -> bytes:
    """A numeric array's values as little-endian bytes on every machine, as
    the raw encoding is documented to carry them."""
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _no_value() -> Any:
    raise CodecError("the record has no value")


def _library(module: str, encoding: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise LoadError(f"the {encoding} encoding needs the Python module {module!r}, which is not installed") from None


def codec(encoding: str) -> Codec:
    if encoding == "json":
        return JsonCodec()
    if encoding == "msgpack":
        return MsgpackCodec()
    if encoding == "raw":
        return RawCodec()
    raise LoadError(f"unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})")
