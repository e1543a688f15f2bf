"""The Open Inference Protocol (KServe v2) data model, apart from any transport.

The HTTP server (JSON, and the binary tensor data extension) and the gRPC
server turn their framing into calls of tensor() and read_request(); the
answer goes out through response_text() or raw_bytes(). So an input is checked
the same way whichever door it came in by, and every check names the input and
says what was expected.

Inputs must match the pipeline's declaration exactly (datatype, rank, fixed
dimensions): the protocol lets a client learn them from the model metadata, and
a server that guessed would hide client bugs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import ClientError, short
from kbuild.runtime.contract.pipeline import PipelineSpec, TensorSpec
from kbuild.runtime.tensors import (
    DTYPES,
    Array,
    Vars,
    decode_value,
    encode_array,
    fmt_shape,
    json_kind,
    json_text,
    shape_matches,
)

PLATFORM = "kbuild"
# What GET /v2 and ServerMetadata announce.
EXTENSIONS = ("binary_tensor_data",)

# Wire byte order is little-endian whatever the host's.
_WIRE_DTYPES = {name: dtype.newbyteorder("<") for name, dtype in DTYPES.items() if name not in ("BYTES", "BOOL")}


class NotFound(ClientError):
    """An unknown model or version."""

    http_status = 404


@dataclass(slots=True)
class Request:
    """An inference request after validation (not frozen: that costs a call per field)."""

    id: str | None
    inputs: Vars
    outputs: tuple[str, ...]  # requested, in order; all declared outputs by default
    binary: frozenset[str]  # outputs to send as binary data (HTTP only)


class Model:
    """The pipeline as the protocol sees it: one model named after it."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = spec.version or ""
        self.inputs = {s.name: s for s in spec.inputs}
        self.outputs = {s.name: s for s in spec.outputs}
        self.output_names = tuple(self.outputs)
        # The fixed parts of an inference response (response_text).
        self.json_start = '{"model_name":' + json_text(self.name)
        if self.version:
            self.json_start += ',"model_version":' + json_text(self.version)
        self.output_starts = {
            s.name: f'{{"name":{json_text(s.name)},"datatype":{json_text(s.datatype)},"shape":' for s in spec.outputs
        }

    def check(self, name: str, version: str | None) -> None:
        """Raise NotFound unless (name, version) names this model; an empty
        version means the current one."""
        if name != self.name:
            raise NotFound(f"unknown model {short(repr(name))} (this server serves {self.name!r})")
        if version and version != self.version:
            known = self.version or "none"
            raise NotFound(f"model {name!r} has no version {short(repr(version))} (versions: {known})")

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": PLATFORM,
            "inputs": [tensor_metadata(s) for s in self.spec.inputs],
            "outputs": [tensor_metadata(s) for s in self.spec.outputs],
        }

    def spec_of(self, name: object) -> TensorSpec:
        spec = self.inputs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ClientError(f"unknown input {short(repr(name))} (inputs: {', '.join(self.inputs)})")
        return spec

    def requested(self, names: Sequence[object]) -> tuple[str, ...]:
        out: list[str] = []
        for name in names:
            if not isinstance(name, str) or name not in self.outputs:
                raise ClientError(f"unknown output {short(repr(name))} (outputs: {', '.join(self.outputs)})")
            if name in out:
                raise ClientError(f"output {name!r} is requested twice")
            out.append(name)
        return tuple(out)

    def complete(self, inputs: Vars) -> Vars:
        if len(inputs) != len(self.inputs):  # inputs holds declared names only
            missing = [name for name in self.inputs if name not in inputs]
            raise ClientError(f"missing input {missing[0]!r}")
        return inputs


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = list(spec.shape) if spec.shape is not None else [-1]
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape}


def check_header(spec: TensorSpec, datatype: object, shape: object) -> tuple[int, ...]:
    """The shape of an input after checking its datatype and shape against the
    declaration."""
    declared = spec.shape
    if datatype == spec.datatype and type(shape) is list and declared is not None and len(shape) == len(declared):
        # The usual header, checked in one pass; any fault is worded below.
        for d, want in zip(shape, declared, strict=True):
            if type(d) is not int or d <= 0 or (want != -1 and want != d):
                break
        else:
            return tuple(shape)
    name = spec.name
    if datatype != spec.datatype:
        if not isinstance(datatype, str) or datatype not in DTYPES:
            known = ", ".join(DTYPES)
            raise ClientError(f"input '{name}': unknown datatype {short(repr(datatype))} (one of {known})")
        raise ClientError(f"input '{name}': datatype {datatype} does not match the model's {spec.datatype}")
    # (bool, a subclass of int, is refused too)
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
        raise ClientError(f"input '{name}': shape must be a list of integers >= 0, got {short(repr(shape))}")
    dims = tuple(shape)
    if spec.shape is not None and not shape_matches(dims, spec.shape):
        raise ClientError(f"input '{name}': expected shape {fmt_shape(spec.shape)}, got {fmt_shape(dims)}")
    # Models reject empty tensors in ways of their own (often as a 500); an
    # empty request is the client's mistake.
    if 0 in dims:
        raise ClientError(f"input '{name}': shape {fmt_shape(dims)} holds no values")
    return dims


def tensor(spec: TensorSpec, datatype: object, shape: object, data: object) -> Array:
    """An input from JSON data (flat or nested, in row-major order) or from a
    typed sequence (gRPC contents)."""
    dims = check_header(spec, datatype, shape)
    count = math.prod(dims)
    fast = _flat_numbers(spec, data, count)
    if fast is not None:
        return fast.reshape(dims)
    if spec.datatype == "BYTES" and isinstance(data, (list, tuple)) and all(isinstance(x, bytes) for x in data):
        # gRPC bytes_contents: bytes, which decode_value (JSON: text) refuses.
        arr = np.empty(len(data), dtype=object)
        arr[:] = list(data)
    else:
        try:
            arr = decode_value(TensorSpec(spec.name, spec.datatype, None), data)
        except ValueError as e:  # NumPy refusing an odd nesting of lists
            raise ClientError(f"input '{spec.name}': cannot make an array of 'data': {e}") from None
    if arr.size != count:
        raise ClientError(f"input '{spec.name}': {arr.size} values for shape {fmt_shape(dims)}, which needs {count}")
    return arr.reshape(dims)


# The largest finite value of each float type (the fast path's range check).
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
# Longer inputs take the general path: its checks run in NumPy, not per value.
_FAST_VALUES = 1024
_INT64 = 2**63


def _flat_numbers(spec: TensorSpec, data: object, count: int) -> Array | None:
    """The common request, a short flat list of JSON numbers for a numeric
    input, straight into the declared dtype: about a third of the general
    path's cost, which a one-row request pays in full. None where anything
    is unusual (nesting, bools, text, a value out of the type's range, NaN);
    the general path then decides, and words the error."""
    target = DTYPES[spec.datatype]
    kind = target.kind
    if kind not in "fiu" or type(data) is not list or len(data) != count or count > _FAST_VALUES:
        return None
    # Type, range and NaN are checked by builtins that run in C (set, min,
    # max, sum), not value by value: a few calls whatever the length.
    types = set(map(type, data))
    if kind == "f":
        if not types <= _NUMBERS:
            return None
        top = _FLOAT_MAX[target]
        low, high = min(data), max(data)
        # NaN compares false and makes the sum NaN; an integer beyond int64
        # (NumPy makes an object array of it) is refused on the general path.
        total = sum(data)
        if not (-top <= low and high <= top and total == total):
            return None
        if int in types and not (-_INT64 <= low and high < _INT64):
            return None
        # Python's floats are doubles: NumPy rounds each to the target type
        # as it would round the float64 array.
        return np.array(data, dtype=target)
    if types != _INTS:
        return None
    try:
        return np.array(data, dtype=target)
    except OverflowError:  # out of the type's range
        return None


_NUMBERS = frozenset((float, int))
_INTS = frozenset((int,))


def tensor_from_raw(spec: TensorSpec, datatype: object, shape: object, raw: bytes | memoryview) -> Array:
    """An input from the binary tensor data extension or gRPC raw contents:
    little-endian values in row-major order; BYTES elements each preceded by
    their length as a 4-byte little-endian integer."""
    dims = check_header(spec, datatype, shape)
    count = math.prod(dims)
    name = spec.name
    if spec.datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(dims)
    size = 1 if spec.datatype == "BOOL" else _WIRE_DTYPES[spec.datatype].itemsize
    if len(raw) != count * size:
        raise ClientError(
            f"input '{name}': {len(raw)} bytes of binary data for shape {fmt_shape(dims)} of "
            f"{spec.datatype}, which needs {count * size}"
        )
    if spec.datatype == "BOOL":
        flags: Array = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags.reshape(dims)
    # astype copies: the array must own writable memory, not the request's.
    return np.frombuffer(raw, dtype=_WIRE_DTYPES[spec.datatype]).astype(DTYPES[spec.datatype]).reshape(dims)


def _bytes_elements(name: str, raw: bytes | memoryview, count: int) -> Array:
    view = memoryview(raw)
    end = len(view)
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > end:
            raise ClientError(f"input '{name}': binary data ends before element {i + 1} of {count}")
        n = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + n > end:
            raise ClientError(f"input '{name}': element {i + 1} is longer than the data left")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise ClientError(f"input '{name}': {end - pos} bytes of binary data left after {count} elements")
    return out


def raw_bytes(datatype: str, arr: Array) -> bytes:
    """An output in the binary form tensor_from_raw() reads."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in arr.flat:
            b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(len(b).to_bytes(4, "little"))
            parts.append(b)
        return b"".join(parts)
    if datatype == "BOOL":
        return arr.astype(np.uint8).tobytes()
    return arr.astype(_WIRE_DTYPES[datatype], copy=False).tobytes()


def read_request(model: Model, obj: object, binary: bytes | memoryview = b"") -> Request:
    """A JSON inference request (already parsed), with the bytes that followed
    the JSON header when the binary extension is used."""
    if not isinstance(obj, dict):
        raise ClientError(f"expected a JSON object with 'inputs', got {json_kind(obj)}")
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError("'id' must be a string")
    params = _params(obj, "request")
    raw_inputs = obj.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ClientError("'inputs' must be a non-empty list of tensors")
    view = memoryview(binary) if binary else _NO_BYTES
    offset = 0
    inputs: Vars = {}
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise ClientError(f"each input must be an object, got {json_kind(item)}")
        spec = model.spec_of(item.get("name"))
        if spec.name in inputs:
            raise ClientError(f"input {spec.name!r} is given twice")
        size = _params(item, "input", spec.name).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ClientError(f"input '{spec.name}': binary_data_size must be an integer >= 0")
            if offset + size > len(view):
                raise ClientError(
                    f"input '{spec.name}': binary_data_size {size} runs past the end of the "
                    f"binary data ({len(view) - offset} bytes left)"
                )
            arr = tensor_from_raw(spec, item.get("datatype"), item.get("shape"), view[offset : offset + size])
            offset += size
        else:
            if "data" not in item:
                raise ClientError(f"input '{spec.name}': no 'data' and no binary_data_size")
            arr = tensor(spec, item.get("datatype"), item.get("shape"), item["data"])
        inputs[spec.name] = arr
    if offset != len(view):
        raise ClientError(f"{len(view) - offset} bytes of binary data are not claimed by any input's binary_data_size")
    model.complete(inputs)

    binary_default = params.get("binary_data_output") is True
    requested = obj.get("outputs")
    if requested is None:
        names = model.output_names
        binary_out = frozenset(names) if binary_default else _NONE
    else:
        if not isinstance(requested, list):
            raise ClientError("'outputs' must be a list of objects with a 'name'")
        names_list: list[object] = []
        chosen: set[str] = set()
        for out in requested:
            if not isinstance(out, dict):
                raise ClientError(f"each requested output must be an object, got {json_kind(out)}")
            name = out.get("name")
            names_list.append(name)
            flag = _params(out, "output", name).get("binary_data", binary_default)
            if flag is True and isinstance(name, str):
                chosen.add(name)
        names = model.requested(names_list)
        binary_out = frozenset(chosen)
    return Request(request_id, inputs, names, binary_out)


# What requests without parameters, binary data or binary outputs share.
_NO_PARAMS: Mapping[str, Any] = {}
_NO_BYTES = memoryview(b"")
_NONE: frozenset[str] = frozenset()


def _params(obj: Mapping[str, Any], where: str, name: object = None) -> Mapping[str, Any]:
    """The object's parameters ({} for none); `where` ("request", "input",
    "output") and the tensor's name word the error only when there is one."""
    params = obj.get("parameters")
    if params is None:
        return _NO_PARAMS
    if not isinstance(params, dict):
        at = {"input": f"input '{name}'", "output": f"output {short(repr(name))}"}.get(where, where)
        raise ClientError(f"{at}: 'parameters' must be an object")
    return params


def response_text(model: Model, request: Request, outputs: Vars) -> tuple[str, list[bytes]]:
    """The response's JSON text and the binary chunks that follow it, in
    order. Written piece by piece around parts the Model made once: the text
    json.dumps(separators=(",", ":")) writes for the response object, for a
    fraction of the cost on a one-row answer."""
    parts = [model.json_start]
    if request.id is not None:
        parts += (',"id":', json_text(request.id))
    parts.append(',"outputs":[')
    chunks: list[bytes] = []
    for i, name in enumerate(request.outputs):
        arr = outputs[name]
        parts += ("," if i else "", model.output_starts[name], "[", ",".join(map(str, arr.shape)), "]")
        if name in request.binary:
            data = raw_bytes(model.outputs[name].datatype, arr)
            parts.append(f',"parameters":{{"binary_data_size":{len(data)}}}}}')
            chunks.append(data)
        else:
            parts += (',"data":', json_text(encode_array(arr.reshape(-1))), "}")
    parts.append("]}")
    return "".join(parts), chunks
