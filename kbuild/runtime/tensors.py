"""Named tensors in and out of JSON, independent of any transport.

Every server (HTTP now, gRPC and Kafka later) and the CLI go through
decode_inputs() and encode_outputs(), so a request is validated the same way
whichever door it came in by.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from kbuild.runtime.contract.errors import ClientError
from kbuild.runtime.contract.pipeline import TensorSpec

Array = NDArray[Any]
Vars = dict[str, Array]

# Open Inference Protocol datatype -> NumPy dtype. BYTES are object arrays of
# str (text) or bytes, as docs/artifact.md says.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}


def shape_matches(actual: Sequence[int], declared: Sequence[int]) -> bool:
    if len(actual) != len(declared):
        return False
    for a, d in zip(actual, declared, strict=True):  # a loop: cheaper than all() on a few dims
        if d != -1 and d != a:
            return False
    return True


def fmt_shape(shape: Sequence[int]) -> str:
    """A shape as messages write it: [-1, 4]."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def decode_inputs(obj: object, specs: Sequence[TensorSpec]) -> Vars:
    """Validate a JSON object of named inputs against the declared inputs.

    Raises ClientError with a message that names the input and says what was
    expected, e.g. "input 'features': expected shape [-1, 4], got [1, 3]".
    """
    if not isinstance(obj, dict):
        raise ClientError(f"expected a JSON object of named inputs, got {json_kind(obj)}")
    known = {s.name for s in specs}
    unknown = [k for k in obj if k not in known]
    if unknown:
        raise ClientError(f"unknown input {unknown[0]!r} (inputs: {', '.join(s.name for s in specs)})")
    out: Vars = {}
    for spec in specs:
        if spec.name not in obj:
            raise ClientError(f"missing input {spec.name!r}")
        out[spec.name] = decode_value(spec, obj[spec.name])
    return out


def decode_value(spec: TensorSpec, value: object) -> Array:
    """One input value (a scalar or a nested list) -> an array of spec's dtype.

    One convenience, because it is unambiguous: a value whose rank is one less
    than declared, where the declared first dimension is the batch (-1 or 1),
    is taken as a single record and gets a batch axis of 1. So {"features":
    [5.1, 3.5, 1.4, 0.2]} works for shape [-1, 4]; the outputs stay batched.
    """
    arr = _to_array(spec, value)
    shape = spec.shape
    if shape is not None:
        if arr.ndim == len(shape) - 1 and shape[0] in (-1, 1) and shape_matches(arr.shape, shape[1:]):
            arr = arr[np.newaxis]
        if not shape_matches(arr.shape, shape):
            raise ClientError(f"input '{spec.name}': expected shape {fmt_shape(shape)}, got {fmt_shape(arr.shape)}")
    return arr


def _to_array(spec: TensorSpec, value: object) -> Array:
    name, datatype = spec.name, spec.datatype
    if datatype == "BYTES":
        return _to_bytes_array(name, value)
    try:
        raw = np.asarray(value)
    except ValueError:
        raise ClientError(f"input '{name}': nested lists must be rectangular (rows of equal length)") from None
    if raw.size == 0:
        return raw.astype(DTYPES[spec.datatype])
    kind = raw.dtype.kind
    if kind == "O":
        _reject_objects(name, datatype, raw)
    if kind in "US":
        raise ClientError(f"input '{name}': expected {_expected(datatype)}, got strings")
    if datatype == "BOOL":
        if kind != "b":
            raise ClientError(f"input '{name}': expected booleans (true/false)")
        return raw
    if kind == "b":
        raise ClientError(f"input '{name}': expected {_expected(datatype)}, got booleans")
    if kind == "f" and not np.isfinite(raw).all():
        # NaN and infinities have no JSON spelling; only a number beyond
        # float64 (1e400) or a non-JSON source (msgpack, Python) gets here
        raise ClientError(
            f"input '{name}': {raw[~np.isfinite(raw)].flat[0]} is not a number JSON has "
            "(RFC 8259: no NaN, Infinity or numbers beyond float64)"
        )
    target = DTYPES[spec.datatype]
    if target.kind == "f":
        with np.errstate(over="ignore"):  # overflow is reported below, as a ClientError
            out = raw.astype(target)
        # A finite number that becomes inf only overflowed the type: say so
        # rather than feeding inf to a model.
        if not np.isfinite(out).all() and np.isfinite(raw[~np.isfinite(out)]).any():
            raise ClientError(f"input '{name}': value out of range for {datatype}")
        return out
    # integer targets
    if kind == "f":
        if not np.isfinite(raw).all() or (raw != np.floor(raw)).any():
            raise ClientError(f"input '{name}': expected integers for {datatype}, got non-integers")
    info = np.iinfo(target)
    lo, hi = raw.min(), raw.max()
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise ClientError(f"input '{name}': value {_num(bad)} out of range for {datatype} [{info.min}, {info.max}]")
    return raw.astype(target)


def raw_value(spec: TensorSpec, data: bytes) -> Array:
    """A message's bytes as the one row of a BYTES input (a scalar where the
    input has no dimensions), as the raw stream encodings feed them."""
    arr = np.empty((1,) if spec.shape else (), dtype=object)
    arr[...] = data
    return arr


def _to_bytes_array(name: str, value: object) -> Array:
    try:
        arr = np.array(value, dtype=object)
    except ValueError:  # ragged nesting
        raise ClientError(f"input '{name}': nested lists must be rectangular (rows of equal length)") from None
    for item in arr.flat:
        if type(item) is not str:
            if isinstance(item, list):
                raise ClientError(f"input '{name}': nested lists must be rectangular (rows of equal length)")
            raise ClientError(f"input '{name}': expected strings, got {json_kind(item)}")
    return arr


class NonFinite:
    """Where a JSON document said NaN or Infinity, which are not JSON numbers
    (RFC 8259): loads() leaves one of these in place of the value, so the
    input that holds it is named in the 400. (A number beyond float64, 1e400,
    reads as infinity and is refused when the input is decoded.)"""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# Made once: json.loads with any option builds a new decoder at every call.
_DECODER = json.JSONDecoder(parse_constant=NonFinite)
# Its scanner (C where the accelerator is), called as JSONDecoder.decode
# would, without the two Python frames around it: a one-row request's JSON
# costs less to scan than to reach the scanner.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
# JSON's whitespace; it matches at any index (maybe nothing), so never None.
_SPACE = cast(Callable[[str, int], "re.Match[str]"], re.compile(r"[ \t\n\r]*").match)


def loads(body: bytes | str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity become NonFinite markers
    (refused, with the input's name, when decoded). Raises ValueError
    (UnicodeDecodeError, JSONDecodeError) for what is not JSON."""
    if isinstance(body, bytes):
        # As the utf-8-sig codec reads it, without that codec's Python layer.
        body = (body[3:] if body.startswith(_BOM) else body).decode("utf-8")
    try:
        obj, end = _SCAN(body, _SPACE(body, 0).end())
    except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", body, e.value) from None
    if end != len(body):
        end = _SPACE(body, end).end()
        if end != len(body):
            raise json.JSONDecodeError("Extra data", body, end)
    return obj


_BOM = b"\xef\xbb\xbf"


def dumps(obj: object) -> bytes:
    """Compact, strict JSON: NaN and infinities (which JSON cannot hold) are
    written as null. Costs nothing when there are none."""
    return json_text(obj).encode("utf-8")


def json_text(obj: object) -> str:
    """dumps() as text (ASCII: anything else is escaped)."""
    try:
        return _encode(obj)
    except ValueError:  # a non-finite float somewhere
        return _encode(_finite(obj))


def _encoder() -> Callable[[object], str]:
    """JSONEncoder(separators=(",", ":"), allow_nan=False).encode, as the C
    encoder made once: JSONEncoder makes a new one on every call, which costs
    more than encoding a one-row answer. Without the C accelerator, or should
    it write anything else, the encode method itself."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    try:
        from _json import make_encoder
    except ImportError:
        return plain

    def refuse(obj: object) -> object:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    # No circular-reference markers: what is encoded here is a tree.
    made = make_encoder(None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)

    def encode(obj: object) -> str:
        return "".join(made(obj, 0))

    probe = {"a": [1, -2.5, "é\n", None, True, {}], "b": "x"}
    try:
        same = encode(probe) == plain(probe)
    except Exception:  # an accelerator of another signature
        same = False
    return encode if same else plain


_encode = _encoder()


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def _reject_objects(name: str, datatype: str, raw: Array) -> None:
    """Explain why a numeric input came out as an object array."""
    for item in raw.flat:
        if isinstance(item, NonFinite):
            raise ClientError(
                f"input '{name}': {item.text} is not a JSON number (RFC 8259 has no NaN, "
                "Infinity or numbers beyond float64)"
            )
    for item in raw.flat:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ClientError(f"input '{name}': expected {_expected(datatype)}, got {json_kind(item)}")
    # Only Python ints too large for any NumPy integer remain.
    raise ClientError(f"input '{name}': value out of range for {datatype}")


def _expected(datatype: str) -> str:
    if datatype.startswith("FP"):
        return "numbers"
    if datatype == "BOOL":
        return "booleans"
    return "integers"


def _num(x: Any) -> str:
    f = float(x)
    return str(int(f)) if f.is_integer() else repr(f)


def json_kind(x: object) -> str:
    """What a parsed JSON value is, for messages: 'a list', 'null', ..."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    if isinstance(x, NonFinite):
        return f"{x.text}, which is not a JSON number"
    return type(x).__name__


def as_array(value: object) -> Array:
    """What a python step returned -> an array; text becomes an object array of
    str, the runtime's representation of BYTES."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        arr = np.asarray(value)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


def encode_outputs(outputs: Mapping[str, Array]) -> dict[str, Any]:
    """Named arrays -> JSON-able values of the same nesting (scalars for 0-d)."""
    return {name: encode_array(arr) for name, arr in outputs.items()}


def encode_array(arr: Array) -> Any:
    """An array as JSON-able values (NaN and infinities stay floats: dumps()
    writes them as null, as the Kafka codec does)."""
    # tolist() turns float32/uint64/bool and str into Python values in C; only
    # bytes and mixed objects need a walk.
    kind = arr.dtype.kind
    if kind == "S" or (kind == "O" and not set(map(type, arr.flat)) <= {str}):
        return _encode_objects(arr.tolist())
    return arr.tolist()


def _encode_objects(x: Any) -> Any:
    if isinstance(x, list):
        return [_encode_objects(v) for v in x]
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(x).decode("ascii")
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
