"""The gRPC server (inference.GRPCInferenceService) as the artifact runs it,
spoken to by Triton's client and by stubs generated from Triton's own copy of
the protocol; and the message definitions checked against that copy."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kbuild.runtime.transports import oip_proto
from tests.helpers.build import free_port
from tests.helpers.oip_servers import ECHO, ECHO_CODE
from tests.helpers.runtime import (
    SETOSA,
    TIMEOUT_S,
    VIRGINICA,
    Server,
    slow_guarded_iris,
    subprocess_env,
    write_guarded_iris,
    write_root,
)


def grpc_port(server: Server) -> int:
    [line] = [line for line in server.seen if '"start"' in line]
    [url] = [e for e in json.loads(line)["endpoints"] if e.startswith("grpc://")]
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def iris_grpc(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[tuple[Server, int]]:
    root = write_guarded_iris(tmp_path_factory.mktemp("grpc") / "root", models["onnx"])
    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    spec["serve"] = {"http": {"host": "127.0.0.1"}, "grpc": {"host": "127.0.0.1", "port": 1}}
    spec_path.write_text(json.dumps(spec))
    port = free_port()
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_GRPC_PORT=str(port)))
    srv.started()
    srv.wait_event("ready")
    assert grpc_port(srv) == port
    yield srv, port
    assert srv.terminate() == 0


@pytest.fixture(scope="module")
def echo_stub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    spec = {**ECHO, "serve": {"grpc": {"host": "127.0.0.1", "max_message_bytes": 4096}}}
    root = write_root(
        tmp_path_factory.mktemp("echo-grpc") / "root",
        spec,
        code={"echo": {"rt_echo.py": ECHO_CODE}},
    )
    srv = Server(root, "--grpc-port", "0")
    srv.wait_event("ready")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port(srv)}")
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()
    assert srv.terminate() == 0


def test_messages_match_tritons_copy_of_the_protocol() -> None:
    theirs = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(theirs)
    by_name = {m.name: m for m in theirs.message_type}
    ours = oip_proto.FILE
    assert ours.package == theirs.package == "inference"
    for message in ours.message_type:
        assert message == by_name[message.name], message.name
    methods = {m.name: m for m in theirs.service[0].method}
    for method in ours.service[0].method:
        assert (method.input_type, method.output_type) == (
            methods[method.name].input_type,
            methods[method.name].output_type,
        )
    assert len(ours.service[0].method) == 6


def test_triton_client_health_metadata_and_infer(iris_grpc: tuple[Server, int]) -> None:
    _, port = iris_grpc
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1.0.0")
    server = client.get_server_metadata(as_json=True)
    assert server == {"name": "kbuild", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    meta = client.get_model_metadata("iris", as_json=True)
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probability"]
    assert meta["versions"] == ["1.0.0"] and meta["platform"] == "kbuild"

    x = np.array([SETOSA, VIRGINICA], dtype=np.float32)
    inputs = [triton.InferInput("features", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(x)
    result = client.infer("iris", inputs, request_id="g1")
    assert result.get_response().id == "g1"
    assert [v.decode() for v in result.as_numpy("label")] == ["setosa", "virginica"]
    np.testing.assert_allclose(result.as_numpy("probability"), [0.98, 0.92], atol=0.005)
    only = client.infer("iris", inputs, outputs=[triton.InferRequestedOutput("probability")])
    assert [o.name for o in only.get_response().outputs] == ["probability"]

    with pytest.raises(InferenceServerException, match="unknown model 'rose'") as e:
        client.infer("rose", inputs)
    assert e.value.status() == "StatusCode.NOT_FOUND"
    bad = [triton.InferInput("features", [1, 4], "FP64")]
    bad[0].set_data_from_numpy(np.array([SETOSA], dtype=np.float64))
    with pytest.raises(InferenceServerException, match="datatype FP64 does not match") as e:
        client.infer("iris", bad)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    negative = [triton.InferInput("features", [1, 4], "FP32")]
    negative[0].set_data_from_numpy(np.array([[-1, 1, 1, 1]], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="step 'guard'") as e:
        client.infer("iris", negative)
    assert e.value.status() == "StatusCode.INTERNAL"
    assert client.is_server_ready()


def test_typed_contents_in_typed_contents_out(
    echo_stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name="echo", id="typed")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    text.contents.bytes_contents.extend([b"ab", "é".encode()])
    counts = request.inputs.add(name="counts", datatype="INT32", shape=[2, 2])
    counts.contents.int_contents.extend([1, 2, 3, 4])
    response = echo_stub.ModelInfer(request, timeout=TIMEOUT_S)
    assert response.id == "typed" and response.model_name == "echo"
    assert not response.raw_output_contents
    upper, total, big = response.outputs
    assert (upper.name, upper.datatype, list(upper.shape)) == ("upper", "BYTES", [2])
    # BYTES from gRPC reach the pipeline as bytes: bytes.upper() leaves "é" alone
    assert list(upper.contents.bytes_contents) == [b"AB", "é".encode()]
    assert list(total.contents.int64_contents) == [3, 7]
    assert list(big.contents.bool_contents) == [False, True]


def test_raw_contents_in_raw_contents_out(
    echo_stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="counts", datatype="INT32", shape=[1, 2])
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.extend([np.array([[2, 5]], "<i4").tobytes(), b"\x02\x00\x00\x00hi"])
    request.outputs.add(name="total")
    response = echo_stub.ModelInfer(request, timeout=TIMEOUT_S)
    [total] = response.outputs
    assert total.name == "total" and list(total.shape) == [1]
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [7]


@pytest.mark.parametrize(
    "change, code, message",
    [
        (
            lambda r: r.inputs[1].contents.ClearField("int_contents"),
            "INVALID_ARGUMENT",
            "input 'counts': 0 values for shape [1, 2], which needs 2",
        ),
        (
            lambda r: r.inputs[1].contents.fp32_contents.extend([1.0, 2.0]),
            "INVALID_ARGUMENT",
            "input 'counts': INT32 data goes in contents.int_contents, not contents.fp32_contents",
        ),
        (
            lambda r: r.inputs[1].contents.int_contents.append(3),
            "INVALID_ARGUMENT",
            "input 'counts': 3 values for shape [1, 2], which needs 2",
        ),
        (
            lambda r: (
                r.inputs[1].contents.ClearField("int_contents"),
                r.inputs[1].contents.fp32_contents.extend([1.0, 2.0]),
            ),
            "INVALID_ARGUMENT",
            "input 'counts': INT32 data goes in contents.int_contents, not contents.fp32_contents",
        ),
        (lambda r: r.inputs.pop(), "INVALID_ARGUMENT", "missing input 'counts'"),
        (
            lambda r: r.raw_input_contents.append(b"x"),
            "INVALID_ARGUMENT",
            "raw_input_contents has 1 entries for 2 inputs",
        ),
        (lambda r: setattr(r, "model_name", "rose"), "NOT_FOUND", "unknown model 'rose'"),
        (lambda r: r.inputs[0].contents.bytes_contents.append(b"x" * 5000), "RESOURCE_EXHAUSTED", ""),
    ],
)
def test_bad_calls_get_status_codes(
    echo_stub: service_pb2_grpc.GRPCInferenceServiceStub, change: object, code: str, message: str
) -> None:
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"a")
    request.inputs.add(name="counts", datatype="INT32", shape=[1, 2]).contents.int_contents.extend([1, 2])
    change(request)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as e:
        echo_stub.ModelInfer(request, timeout=TIMEOUT_S)
    assert e.value.code().name == code
    assert e.value.details().startswith(message)
    assert echo_stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT_S).ready


def test_grpc_port_rules(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    srv = Server(root, "--grpc-port", "9000")
    assert srv.proc.wait(TIMEOUT_S) == 2
    assert "error: --grpc-port: this pipeline does not serve gRPC (no serve.grpc)" in srv.stderr_rest()

    spec_path = root / "app" / "pipeline.json"
    spec = json.loads(spec_path.read_text())
    spec["serve"] = {"grpc": {"host": "127.0.0.1", "port": free_port()}}
    spec_path.write_text(json.dumps(spec))
    first = Server(root)
    first.wait_event("ready")
    try:
        port = grpc_port(first)
        assert port == spec["serve"]["grpc"]["port"]
        clash = Server(root)
        assert clash.proc.wait(TIMEOUT_S) == 3
        assert f"error: grpc: cannot listen on 127.0.0.1:{port}" in clash.stderr_rest()
    finally:
        assert first.terminate() == 0


def test_sigterm_lets_a_call_in_progress_finish(tmp_path: Path, models: dict[str, Path]) -> None:
    slow = "import time\n\ndef make(config):\n    def run(v):\n        time.sleep(1.0)\n        return {}\n    return run\n"
    root = slow_guarded_iris(tmp_path / "root", models["onnx"], slow, {"grpc": {"host": "127.0.0.1", "port": 1}})
    srv = Server(root, "--grpc-port", "0")
    srv.wait_event("ready")
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port(srv)}")
    inputs = [triton.InferInput("features", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(np.array([SETOSA], dtype=np.float32))
    answers: list[object] = []

    def done(result: object, error: object) -> None:
        answers.append(error or result)

    client.async_infer("iris", inputs, done)
    time.sleep(0.4)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(TIMEOUT_S) == 0
    deadline = time.monotonic() + TIMEOUT_S
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    [answer] = answers
    assert [v.decode() for v in answer.as_numpy("label")] == ["setosa"]  # type: ignore[attr-defined]
    client.close()


# -- hostile clients: every fault of theirs is INVALID_ARGUMENT or NOT_FOUND, with a short message

RAW_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.mark.parametrize(
    "garbage", [b"\xff\xff\xff\xff", b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x12\x05ab"]
)
def test_bytes_that_are_no_message_are_invalid_argument(iris_grpc: tuple[Server, int], garbage: bytes) -> None:
    _, port = iris_grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(RAW_INFER, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as refused:
            call(garbage, timeout=TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest message" in (refused.value.details() or "")


@pytest.mark.parametrize("field", ["model_name", "input", "output"])
def test_long_names_come_back_short(iris_grpc: tuple[Server, int], field: str) -> None:
    _, port = iris_grpc
    long = "n" * 20_000
    request = pb.ModelInferRequest(model_name=long if field == "model_name" else "iris")
    tensor = request.inputs.add(name=long if field == "input" else "features", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(SETOSA)
    if field == "output":
        request.outputs.add(name=long)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=TIMEOUT_S)
    expected = grpc.StatusCode.NOT_FOUND if field == "model_name" else grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.code() == expected
    details = refused.value.details() or ""
    assert "(20002 characters)" in details and len(details) < 1000
