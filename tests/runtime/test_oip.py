"""The Open Inference Protocol request reader, in-process: what a valid
request becomes, and the 4xx every malformed one gets."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbuild.runtime.contract.errors import ClientError
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.oip import Model, Request, raw_bytes, read_request, response_text
from tests.helpers.in_process import SCALE_PIPELINE

TEXT_PIPELINE: dict[str, Any] = {
    **SCALE_PIPELINE,
    "inputs": {"x": {"datatype": "FP32", "shape": [-1, 2]}, "text": {"datatype": "BYTES", "shape": [-1]}},
}


@pytest.fixture
def model() -> Model:
    return Model(PipelineSpec.from_json(json.loads(json.dumps(TEXT_PIPELINE))))


def x_input(**extra: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0], **extra}


TEXT = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["héllo"]}


def test_json_inputs_and_requested_outputs(model: Model) -> None:
    request = read_request(model, {"id": "r1", "inputs": [x_input(), TEXT], "outputs": [{"name": "y"}]})
    assert request.id == "r1" and request.outputs == ("y",) and request.binary == frozenset()
    assert request.inputs["x"].dtype == np.float32 and request.inputs["x"].tolist() == [[1.0, 2.0]]
    assert request.inputs["text"].tolist() == ["héllo"]


def test_the_binary_extension_splits_the_bytes_after_the_json(model: Model) -> None:
    raw = np.array([[1.5, -2.0]], dtype="<f4").tobytes()
    text = b"\x05\x00\x00\x00hello"
    obj = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": len(raw)}},
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(text)}},
        ],
        "parameters": {"binary_data_output": True},
    }
    request = read_request(model, obj, raw + text)
    assert request.inputs["x"].tolist() == [[1.5, -2.0]]
    assert [bytes(v) if not isinstance(v, str) else v.encode() for v in request.inputs["text"].tolist()] == [b"hello"]
    assert request.binary == frozenset({"y"})


@pytest.mark.parametrize(
    "obj, binary, phrase",
    [
        ([], b"", "expected a JSON object with 'inputs'"),
        ({"inputs": []}, b"", "'inputs' must be a non-empty list"),
        ({"id": 3, "inputs": [x_input(), TEXT]}, b"", "'id' must be a string"),
        ({"inputs": [x_input(), x_input(), TEXT]}, b"", "input 'x' is given twice"),
        ({"inputs": [x_input(name="z"), TEXT]}, b"", "unknown input 'z'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2]}, TEXT]},
            b"",
            "no 'data' and no binary_data_size",
        ),
        ({"inputs": [x_input(datatype="INT8"), TEXT]}, b"", "x"),
        ({"inputs": [x_input(shape=[1, 3]), TEXT]}, b"", "x"),
        ({"inputs": [x_input(parameters={"binary_data_size": 16}), TEXT]}, b"12345678", "runs past the end"),
        ({"inputs": [x_input(parameters={"binary_data_size": -1}), TEXT]}, b"", "binary_data_size must be an integer"),
        ({"inputs": [x_input(), TEXT]}, b"extra", "not claimed by any input"),
        ({"inputs": [x_input()]}, b"", "text"),
        ({"inputs": [x_input(), TEXT], "outputs": {"name": "y"}}, b"", "'outputs' must be a list"),
        ({"inputs": [x_input(), TEXT], "outputs": ["y"]}, b"", "each requested output must be an object"),
        ({"inputs": [x_input(), TEXT], "outputs": [{"name": "nope"}]}, b"", "nope"),
        ({"inputs": [x_input(), TEXT], "parameters": []}, b"", "parameters"),
        ({"inputs": [x_input(parameters=[]), TEXT]}, b"", "input 'x': 'parameters' must be an object"),
        (
            {"inputs": [x_input(), TEXT], "outputs": [{"name": "y", "parameters": 1}]},
            b"",
            "output 'y': 'parameters' must be an object",
        ),
    ],
    ids=[
        "not-an-object",
        "no-inputs",
        "numeric-id",
        "twice",
        "unknown-input",
        "no-data",
        "wrong-datatype",
        "wrong-shape",
        "binary-overrun",
        "negative-size",
        "unclaimed-bytes",
        "missing-input",
        "outputs-not-list",
        "output-not-object",
        "unknown-output",
        "parameters-not-object",
        "input-parameters-not-object",
        "output-parameters-not-object",
    ],
)
def test_malformed_requests_are_the_clients_fault(model: Model, obj: Any, binary: bytes, phrase: str) -> None:
    with pytest.raises(ClientError) as refused:
        read_request(model, obj, binary)
    assert refused.value.http_status // 100 == 4
    assert phrase in refused.value.message, refused.value.message


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "text", "y", ""]) | st.text(max_size=5)},
    optional={
        "datatype": st.sampled_from(["FP32", "BYTES", "INT8", "BOOL", "FP16", "nope"]) | _JSON,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | _JSON,
        "data": _JSON,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 40) | _JSON}),
    },
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": st.lists(_TENSOR, max_size=3) | _JSON},
    optional={
        "id": _JSON,
        "outputs": st.lists(st.fixed_dictionaries({"name": _JSON}), max_size=2) | _JSON,
        "parameters": _JSON,
    },
)


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=_REQUEST | _JSON, binary=st.binary(max_size=40))
def test_any_request_is_read_or_refused_as_the_clients_fault(model: Model, obj: Any, binary: bytes) -> None:
    try:
        request = read_request(model, obj, binary)
    except ClientError as error:
        assert error.http_status // 100 == 4 and error.message
    else:
        assert set(request.inputs) == {"x", "text"}


_DATATYPES = ["FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT8", "UINT64"]
_JSON_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.booleans(),
)


@given(datatype=st.sampled_from(_DATATYPES), data=st.lists(_JSON_NUMBERS, min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_the_fast_path_for_flat_numbers_agrees_with_the_general_one(datatype: str, data: list[Any]) -> None:
    """Whatever a flat list of JSON numbers holds (bools, NaN, values beyond
    the type), the fast path answers as the general path does, or leaves it
    to the general path (which words the 400)."""
    from kbuild.runtime.contract.pipeline import TensorSpec
    from kbuild.runtime.oip import _flat_numbers
    from kbuild.runtime.tensors import decode_value

    spec = TensorSpec("v", datatype, None)
    try:
        general: Any = decode_value(spec, data)
    except ClientError as e:
        general = e
    fast = _flat_numbers(spec, data, len(data))
    if fast is None:
        return
    assert not isinstance(general, ClientError), f"fast path took what the general path refuses: {general}"
    assert fast.dtype == general.dtype and fast.shape == general.shape
    np.testing.assert_array_equal(fast, general)


def test_the_fast_path_takes_the_common_request_and_leaves_the_rest() -> None:
    from kbuild.runtime.contract.pipeline import TensorSpec
    from kbuild.runtime.oip import _flat_numbers

    fp32, int8 = TensorSpec("v", "FP32", None), TensorSpec("v", "INT8", None)
    taken = _flat_numbers(fp32, [5.1, 3.5, 1, 0.2], 4)
    assert taken is not None and taken.dtype == np.float32
    assert _flat_numbers(fp32, [[5.1, 3.5]], 2) is None  # nested
    assert _flat_numbers(fp32, [1e39], 1) is None  # beyond FP32: the general path says so
    assert _flat_numbers(fp32, [True], 1) is None
    assert _flat_numbers(int8, [300], 1) is None and _flat_numbers(int8, [1.5], 1) is None
    assert _flat_numbers(fp32, [1.0] * 2000, 2000) is None  # long inputs: NumPy's checks are cheaper there


TWO_OUTPUTS: dict[str, Any] = {
    **SCALE_PIPELINE,
    "name": "naïve",
    "outputs": {"y": {"datatype": "FP32", "shape": [-1, 2]}, "label": {"datatype": "BYTES", "shape": [-1]}},
}


@pytest.mark.parametrize("request_id", [None, 'r-ü"1'])
@pytest.mark.parametrize("binary", [frozenset(), frozenset({"y"}), frozenset({"y", "label"})])
def test_the_response_text_is_what_json_dumps_writes_for_the_response(
    request_id: str | None, binary: frozenset[str]
) -> None:
    model = Model(PipelineSpec.from_json(json.loads(json.dumps(TWO_OUTPUTS))))
    outputs = {
        "y": np.array([[0.5, np.nan], [np.inf, -2.0]], dtype=np.float32),
        "label": np.array(["a", "é"], dtype=object),
    }
    text, chunks = response_text(model, Request(request_id, {}, ("label", "y"), binary), outputs)
    expected: dict[str, Any] = {"model_name": "naïve", "model_version": "2"}
    if request_id is not None:
        expected["id"] = request_id
    tensors = []
    for name, datatype in (("label", "BYTES"), ("y", "FP32")):
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [2] if name == "label" else [2, 2]}
        if name in binary:
            tensor["parameters"] = {"binary_data_size": len(raw_bytes(datatype, outputs[name]))}
        else:
            tensor["data"] = ["a", "é"] if name == "label" else [0.5, None, None, -2.0]
        tensors.append(tensor)
    expected["outputs"] = tensors
    assert text == json.dumps(expected, separators=(",", ":"))
    assert chunks == [raw_bytes(dt, outputs[n]) for n, dt in (("label", "BYTES"), ("y", "FP32")) if n in binary]
