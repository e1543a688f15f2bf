"""The signatures a TensorFlow SavedModel declares, read from saved_model.pb
with a protocol-buffer wire reader of our own: validate checks a tensorflow
step's names against them without importing TensorFlow (seconds, gigabytes).

Only the fields on the way to the signatures are decoded (SavedModel.meta_graphs,
MetaGraphDef.meta_info_def.tags and .signature_def, SignatureDef.inputs and
.outputs, TensorInfo.dtype and .tensor_shape); the graph is skipped unread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


class WireError(ValueError):
    """saved_model.pb is not a SavedModel message."""


# tensorflow/core/framework/types.proto: the DataType values a signature meets
DTYPES = {1: "FP32", 2: "FP64", 3: "INT32", 4: "UINT8", 5: "INT16", 6: "INT8", 7: "BYTES", 9: "INT64", 10: "BOOL",
          17: "UINT16", 19: "FP16", 22: "UINT32", 23: "UINT64"}  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    datatype: str  # the KServe name, or DT_<n> for one kbuild does not carry
    shape: tuple[int, ...] | None  # -1 where free; None for unknown rank


@dataclass(frozen=True)
class Signature:
    name: str
    tags: tuple[str, ...]  # of the MetaGraph that holds it
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise WireError("a varint runs past the end")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field: an int for varints, the bytes of a length-delimited one."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, value
        elif wire == 2:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise WireError("a field runs past the end")
            yield number, data[at : at + size]
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise WireError(f"wire type {wire} (groups are not in SavedModel)")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(data: bytes) -> tuple[int, ...] | None:
    dims: list[int] = []
    for number, value in _fields(data):
        if number == 3 and value:
            return None
        if number == 2 and isinstance(value, bytes):
            size = next((v for n, v in _fields(value) if n == 1 and isinstance(v, int)), 0)
            dims.append(max(_signed(size), -1))
    return tuple(dims)


def _tensor(data: bytes) -> TensorSpec:
    datatype, shape = "DT_0", None
    for number, value in _fields(data):
        if number == 2 and isinstance(value, int):
            datatype = DTYPES.get(value, f"DT_{value}")
        elif number == 3 and isinstance(value, bytes):
            shape = _shape(value)
    return TensorSpec(datatype, shape)


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, field in _fields(data):
        if number == 1 and isinstance(field, bytes):
            key = field.decode("utf-8", "replace")
        elif number == 2 and isinstance(field, bytes):
            value = field
    return key, value


def _signature(name: str, tags: tuple[str, ...], data: bytes) -> Signature:
    inputs: dict[str, TensorSpec] = {}
    outputs: dict[str, TensorSpec] = {}
    for number, value in _fields(data):
        if number in (1, 2) and isinstance(value, bytes):
            key, info = _map_entry(value)
            (inputs if number == 1 else outputs)[key] = _tensor(info)
    return Signature(name, tags, inputs, outputs)


def read_signatures(data: bytes) -> list[Signature]:
    """Every signature of every MetaGraph in a serialized SavedModel."""
    found: list[Signature] = []
    for number, meta in _fields(data):
        if number != 2 or not isinstance(meta, bytes):
            continue
        tags: list[str] = []
        defs: list[bytes] = []
        for field, value in _fields(meta):
            if field == 1 and isinstance(value, bytes):
                tags += [v.decode("utf-8", "replace") for n, v in _fields(value) if n == 4 and isinstance(v, bytes)]
            elif field == 5 and isinstance(value, bytes):
                defs.append(value)
        for entry in defs:
            name, signature = _map_entry(entry)
            found.append(_signature(name, tuple(tags), signature))
    return found
