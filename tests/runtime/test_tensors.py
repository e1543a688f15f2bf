"""Decoding JSON inputs into arrays, and outputs back into JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbuild.runtime.contract.errors import ClientError
from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.tensors import NonFinite, as_array, decode_inputs, encode_outputs, loads

FEATURES = TensorSpec("features", "FP32", (-1, 4))


def spec(datatype: str, shape: tuple[int, ...] | None = (-1,), name: str = "x") -> TensorSpec:
    return TensorSpec(name, datatype, shape)


@pytest.mark.parametrize(
    "specs, obj, message",
    [
        ([FEATURES], [[1, 2, 3, 4]], "expected a JSON object of named inputs, got a list"),
        ([FEATURES], {}, "missing input 'features'"),
        (
            [FEATURES],
            {"features": [[1, 2, 3, 4]], "extra": 1},
            "unknown input 'extra' (inputs: features)",
        ),
        (
            [FEATURES],
            {"features": [[1, 2, 3]]},
            "input 'features': expected shape [-1, 4], got [1, 3]",
        ),
        (
            [FEATURES],
            {"features": [[[1, 2, 3, 4]]]},
            "input 'features': expected shape [-1, 4], got [1, 1, 4]",
        ),
        ([FEATURES], {"features": 1.5}, "input 'features': expected shape [-1, 4], got []"),
        (
            [FEATURES],
            {"features": [[1, 2, 3, 4], [1, 2]]},
            "input 'features': nested lists must be rectangular (rows of equal length)",
        ),
        (
            [FEATURES],
            {"features": [["a", "b", "c", "d"]]},
            "input 'features': expected numbers, got strings",
        ),
        (
            [FEATURES],
            {"features": [[1, 2, None, 4]]},
            "input 'features': expected numbers, got null",
        ),
        (
            [FEATURES],
            {"features": [[True, False, True, True]]},
            "input 'features': expected numbers, got booleans",
        ),
        ([FEATURES], {"features": {"a": 1}}, "input 'features': expected numbers, got an object"),
        ([spec("FP16")], {"x": [1e6]}, "input 'x': value out of range for FP16"),
        (
            [spec("INT64")],
            {"x": [1, 2.5]},
            "input 'x': expected integers for INT64, got non-integers",
        ),
        ([spec("INT64")], {"x": [2**70]}, "input 'x': value out of range for INT64"),
        (
            [spec("INT64")],
            {"x": [2**63]},
            "input 'x': value 9223372036854775808 out of range for INT64 [-9223372036854775808, 9223372036854775807]",
        ),
        ([spec("UINT8")], {"x": [1, 256]}, "input 'x': value 256 out of range for UINT8 [0, 255]"),
        ([spec("UINT8")], {"x": [-1]}, "input 'x': value -1 out of range for UINT8 [0, 255]"),
        ([spec("INT8")], {"x": ["1"]}, "input 'x': expected integers, got strings"),
        ([spec("BOOL")], {"x": [1, 0]}, "input 'x': expected booleans (true/false)"),
        ([spec("BYTES")], {"x": ["a", 1]}, "input 'x': expected strings, got a number"),
        (
            [spec("BYTES")],
            {"x": [["a", "b"], ["c"]]},
            "input 'x': nested lists must be rectangular (rows of equal length)",
        ),
        (
            [spec("BYTES", (-1, 2))],
            {"x": [["a", "b", "c"]]},
            "input 'x': expected shape [-1, 2], got [1, 3]",
        ),
        ([spec("FP32", (2, 2))], {"x": [[1, 2]]}, "input 'x': expected shape [2, 2], got [1, 2]"),
    ],
)
def test_bad_inputs_are_client_errors_with_precise_messages(specs: list[TensorSpec], obj: Any, message: str) -> None:
    with pytest.raises(ClientError) as info:
        decode_inputs(obj, specs)
    assert info.value.message == message
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "tensor, value, dtype, shape",
    [
        (FEATURES, [[5.1, 3.5, 1.4, 0.2]], np.float32, (1, 4)),
        (FEATURES, [[5, 3, 1, 0], [1, 2, 3, 4]], np.float32, (2, 4)),  # ints are fine for floats
        (FEATURES, [5.1, 3.5, 1.4, 0.2], np.float32, (1, 4)),  # one record without the batch axis
        (spec("FP64"), 2.5, np.float64, (1,)),  # a scalar for shape [-1]
        (spec("INT64"), [1, 2.0], np.int64, (2,)),  # integral floats are integers
        (spec("UINT64"), [2**64 - 1], np.uint64, (1,)),
        (spec("INT8"), [-128, 127], np.int8, (2,)),
        (spec("BOOL"), [True, False], np.bool_, (2,)),
        (spec("BYTES"), ["a", "é"], object, (2,)),
        (spec("FP32", None), [[[1]]], np.float32, (1, 1, 1)),  # no declared shape: any
        (spec("FP32", ()), 3, np.float32, ()),
    ],
)
def test_good_inputs_decode_to_the_declared_dtype(
    tensor: TensorSpec, value: Any, dtype: Any, shape: tuple[int, ...]
) -> None:
    arr = decode_inputs({tensor.name: value}, [tensor])[tensor.name]
    assert arr.dtype == np.dtype(dtype)
    assert arr.shape == shape
    if dtype is object:
        assert all(type(v) is str for v in arr.flat)


def test_empty_lists_take_the_declared_dtype() -> None:
    arr = decode_inputs({"x": [[]]}, [spec("INT32", (-1, 0))])["x"]
    assert arr.shape == (1, 0) and arr.dtype == np.int32
    # [] is a batch of zero scalars, not zero rows of 4 features
    with pytest.raises(ClientError, match=r"expected shape \[-1, 4\], got \[0\]"):
        decode_inputs({"features": []}, [FEATURES])


def test_values_keep_their_numbers() -> None:
    arr = decode_inputs({"features": [[5.1, 3.5, 1.4, 0.2]]}, [FEATURES])["features"]
    np.testing.assert_array_equal(arr, np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))


def test_encode_outputs_is_json_with_native_types() -> None:
    outputs = {
        "p": np.array([0.25, 0.5], dtype=np.float32),
        "h": np.array([1.5], dtype=np.float16),
        "n": np.array([[1, 2]], dtype=np.uint64),
        "b": np.array([True, False]),
        "s": np.array(["setosa", "virginica"], dtype=object),
        "raw": np.array([b"caf\xc3\xa9", b"\xff\x00"], dtype=object),
        "u": np.array(["x"]),
        "scalar": np.float32(2.0) * np.ones((), dtype=np.float32),
    }
    encoded = encode_outputs(outputs)  # type: ignore[arg-type]  # an np.float32 scalar among arrays, on purpose
    assert encoded == {
        "p": [0.25, 0.5],
        "h": [1.5],
        "n": [[1, 2]],
        "b": [True, False],
        "s": ["setosa", "virginica"],
        "raw": ["café", "/wA="],  # undecodable bytes become base64
        "u": ["x"],
        "scalar": 2.0,
    }
    assert type(encoded["p"][0]) is float and type(encoded["n"][0][0]) is int
    json.dumps(encoded)


def test_as_array_makes_text_bytes_objects() -> None:
    arr = as_array(["a", "b"])
    assert arr.dtype == object and arr.tolist() == ["a", "b"]
    assert as_array(3).shape == ()
    assert as_array([[1.5]]).dtype == np.float64


@pytest.mark.parametrize(
    "value, message",
    [
        ({"datatype": "FLOAT"}, "unknown datatype 'FLOAT'"),
        ({"datatype": "FP32", "shape": [-2]}, "shape must be a list of integers >= -1"),
        ([1], "expected an object"),
    ],
)
def test_tensor_spec_rejects_bad_declarations(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TensorSpec.from_json("x", value)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
_SPACE = st.text(alphabet=" \t\n\r\x0b\xa0", max_size=3)


def _outcome(decode: Callable[[str], object], text: str) -> tuple[str, object]:
    """("ok", the value) or ("error", the message) of decode(text)."""
    try:
        return "ok", decode(text)
    except ValueError as e:
        return "error", str(e)


_JSON_DECODE = json.JSONDecoder(parse_constant=NonFinite).decode


@given(_JSON_VALUES, _SPACE, _SPACE, st.sampled_from(["", "x", "[]", ",", "NaN", "-Infinity"]))
def test_loads_answers_as_the_json_decoder_does(value: object, before: str, after: str, tail: str) -> None:
    # The scanner called directly must read, and refuse, exactly what
    # JSONDecoder.decode reads and refuses, with the same message.
    text = before + json.dumps(value) + after + tail
    got = _outcome(loads, text)
    assert repr(got) == repr(_outcome(_JSON_DECODE, text))
    if got[0] == "ok":  # and from the bytes of a request body
        assert repr(loads(text.encode())) == repr(got[1])


@given(st.text(max_size=12))
def test_loads_refuses_what_is_not_json_as_the_json_decoder_does(text: str) -> None:
    assert repr(_outcome(loads, text)) == repr(_outcome(_JSON_DECODE, text))
