"""A built artifact serving the iris pipeline over HTTP and gRPC with batching,
spoken to by clients we did not write (tritonclient, a Prometheus parser) and
by a property-based fuzzer."""

from __future__ import annotations

import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.helpers.build import Built, copy_example
from tests.helpers.served import (
    BAD_REQUESTS,
    INFER,
    TIMEOUT_S,
    Served,
    infer_grpc,
    infer_http_binary,
    infer_http_json,
    iris_rows,
    model_answer,
    post,
    post_ready,
)


def test_model_metadata_matches_the_spec(served: Served) -> None:
    expected_inputs = [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    expected_outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
    ]
    http_client = triton_http.InferenceServerClient(f"127.0.0.1:{served.http_port}")
    meta = http_client.get_model_metadata("iris")
    assert (meta["name"], meta["versions"]) == ("iris", ["1.0.0"])
    assert (meta["inputs"], meta["outputs"]) == (expected_inputs, expected_outputs)
    grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    meta_g = grpc_client.get_model_metadata("iris")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta_g.inputs] == [("features", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta_g.outputs] == [
        ("label", "BYTES", [-1]),
        ("probability", "FP32", [-1]),
    ]
    assert grpc_client.is_server_ready() and grpc_client.is_model_ready("iris")
    grpc_client.close()


@pytest.mark.parametrize("how", [infer_http_json, infer_http_binary, infer_grpc])
def test_triton_clients_get_the_models_answers(served: Served, how: Any) -> None:
    rows = iris_rows(150)[::7]
    labels, probs = model_answer(rows)
    port = served.grpc_port if how is infer_grpc else served.http_port
    got_labels, got_probs = how(port, rows)
    assert got_labels == labels
    np.testing.assert_allclose(got_probs, probs, rtol=1e-6)


def test_grpc_typed_contents(served: Served) -> None:
    rows = iris_rows(3)
    request = pb.ModelInferRequest(model_name="iris", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=TIMEOUT_S)
    labels, probs = model_answer(rows)
    label, probability = response.outputs
    assert [b.decode() for b in label.contents.bytes_contents] == labels
    np.testing.assert_allclose(list(probability.contents.fp32_contents), probs, rtol=1e-6)
    assert response.id == "typed"


def test_200_requests_from_16_clients_each_get_their_own_answer(served: Served) -> None:
    rows = iris_rows(200)
    labels, probs = model_answer(rows)
    ways = [infer_http_json, infer_http_binary, infer_grpc]

    def client(k: int) -> list[tuple[int, list[str], np.ndarray]]:
        how = ways[k % len(ways)]
        port = served.grpc_port if how is infer_grpc else served.http_port
        return [(i, *how(port, rows[i : i + 1])) for i in range(k, len(rows), 16)]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client, range(16)) for a in batch]
    assert sorted(i for i, _, _ in answers) == list(range(200))
    for i, label, prob in answers:
        assert label == [labels[i]], i
        np.testing.assert_allclose(prob, probs[i : i + 1], rtol=1e-6)


@pytest.mark.parametrize("path, body, status", BAD_REQUESTS)
def test_bad_requests_get_4xx_json_and_the_server_stays_ready(
    served: Served, path: str, body: Any, status: int
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, raw = post(served, path, data)
    assert got == status and json.loads(raw)["error"]
    assert post_ready(served) == 200


def test_an_oversized_body_gets_413(served: Served) -> None:
    conn = served.connect()
    conn.putrequest("POST", INFER)
    conn.putheader("Content-Length", str(64 * 1024 * 1024 + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"error": "request body of 67108865 bytes exceeds the limit of 67108864"}
    conn.close()
    assert post_ready(served) == 200


def test_metrics_are_prometheus_text(served: Served) -> None:
    infer_grpc(served.grpc_port, iris_rows(1))
    conn = served.connect()
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    assert (response.getheader("Content-Type") or "").startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    requests = {
        (s.labels["protocol"], s.labels["endpoint"], s.labels["status"]) for s in families["kbuild_requests"].samples
    }
    assert ("grpc", "ModelInfer", "OK") in requests
    assert ("http", "infer", "200") in requests
    assert {
        "kbuild_batch_rows",
        "kbuild_request_duration_seconds",
        "kbuild_model_load_seconds",
        "kbuild_requests_in_flight",
    } <= set(families)


def test_only_artifacts_that_serve_grpc_carry_it(iris_onnx: Built, iris_serving: Built) -> None:
    for built, with_grpc in ((iris_onnx, False), (iris_serving, True)):
        with zipfile.ZipFile(built.artifact) as zf:
            names = zf.namelist()
        wheels = [n for n in names if n.startswith("wheels/")]
        assert any("grpcio" in n for n in wheels) is with_grpc
        assert ("site/kbuild/runtime/transports/grpc.py" in names) is with_grpc
        assert ("site/kbuild/runtime/transports/oip_proto.py" in names) is with_grpc
        assert "site/kbuild/runtime/transports/http.py" in names


def test_the_pipeline_schema_knows_the_serving_settings(tmp_path: Path) -> None:
    import yaml

    from kbuild.errors import SpecError
    from kbuild.load.pipeline import load_pipeline

    folder = copy_example("iris", tmp_path)
    document = yaml.safe_load((folder / "pipeline.yaml").read_text())
    document["serve"] = {
        "http": {"port": 8080, "max_body_bytes": 1 << 20, "timeout_ms": 2500},
        "grpc": {"port": 8081, "max_message_bytes": 1 << 20, "timeout_ms": 1000},
        "batching": {"max_batch_size": 8, "max_latency_ms": 0.5},
    }
    path = folder / "serving.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_pipeline(path).serve == document["serve"]
    document["serve"]["http"]["max_body"] = 10
    document["serve"]["grpc"]["timeout_ms"] = 0
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as e:
        load_pipeline(path)
    text = str(e.value) + " ".join(map(str, getattr(e.value, "problems", ())))
    assert "max_body" in text and "timeout_ms" in text
