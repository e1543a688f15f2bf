"""The Open Inference Protocol over HTTP, /metrics and /openapi.json, from a
server run as the artifact runs it, spoken to by raw HTTP and by Triton's own
client (tritonclient.http)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.oip_servers import INFER, call, infer_body
from tests.helpers.runtime import (
    SETOSA,
    TIMEOUT_S,
    VIRGINICA,
    Server,
    slow_guarded_iris,
    subprocess_env,
    write_guarded_iris,
)


def test_predict_is_unchanged(iris_server: Server) -> None:
    status, body, _, _ = call(iris_server, "POST", "/predict", {"features": [SETOSA, VIRGINICA]})
    assert status == 200 and body["label"] == ["setosa", "virginica"]
    status, body, resp, raw = call(iris_server, "POST", "/predict", {"features": [0, 0, 0, 0]})
    assert (status, raw) == (204, b"")


def test_metrics_are_prometheus_text(iris_server: Server) -> None:
    call(iris_server, "POST", INFER, infer_body([SETOSA]))
    call(iris_server, "POST", "/v2/models/rose/infer", infer_body([SETOSA]))
    status, _, resp, raw = call(iris_server, "GET", "/metrics")
    assert status == 200
    assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
    assert {
        "kbuild_requests",
        "kbuild_request_duration_seconds",
        "kbuild_requests_in_flight",
        "kbuild_batch_requests",
        "kbuild_batch_rows",
        "kbuild_pipeline_duration_seconds",
        "kbuild_model_load_seconds",
        "kbuild_ready",
        "kbuild_pipeline_info",
    } <= set(families)
    requests = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["kbuild_requests"].samples
        if s.name == "kbuild_requests_total"
    }
    assert requests[("infer", "200")] >= 1 and requests[("infer", "404")] >= 1
    latency = [
        s
        for s in families["kbuild_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["endpoint"] == "infer"
    ]
    assert latency[0].value >= 2
    assert next(iter(families["kbuild_ready"].samples)).value == 1
    assert next(iter(families["kbuild_model_load_seconds"].samples)).value > 0
    batches = [s for s in families["kbuild_batch_rows"].samples if s.name.endswith("_count")]
    assert batches[0].value >= 1
    in_flight = families["kbuild_requests_in_flight"].samples
    assert [s.value for s in in_flight if s.labels["protocol"] == "http"] == [1]  # this scrape


def test_openapi_describes_the_pipeline(iris_server: Server) -> None:
    status, doc, _, _ = call(iris_server, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    assert {
        "/predict",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/ready",
        "/v2/models/iris/infer",
        "/v2/models/iris/versions/1.0.0/infer",
        "/metrics",
        "/openapi.json",
    } <= set(paths)
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["required"] == ["features"]
    features = predict["properties"]["features"]
    assert features["items"] == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
    }
    schemas = doc["components"]["schemas"]
    [tensor] = schemas["InferRequest"]["properties"]["inputs"]["items"]["oneOf"]
    assert tensor["properties"]["name"] == {"const": "features"}
    assert tensor["properties"]["datatype"] == {"const": "FP32"}
    outputs = schemas["InferResponse"]["properties"]["outputs"]["items"]["oneOf"]
    assert [o["properties"]["datatype"]["const"] for o in outputs] == ["BYTES", "FP32"]


def test_after_sigterm_readiness_turns_false_first(tmp_path: Path, models: dict[str, Path]) -> None:
    root = write_guarded_iris(tmp_path / "root", models["onnx"])
    srv = Server(root, "--http-port", "0", env=subprocess_env(KBUILD_DRAIN_S="1.5")).started()
    srv.wait_event("ready")
    conn = srv.connect()
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().read() == b'{"ready":true}'
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # still answering, on the same connection and on new ones, but not ready
    conn.request("GET", "/v2/health/ready")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        503,
        {"ready": False, "error": "not ready: shutting down"},
    )
    assert call(srv, "GET", "/v2/models/iris/ready")[0] == 503
    status, body, _, _ = call(srv, "POST", INFER, infer_body([SETOSA]))
    assert status == 200 and body["outputs"][0]["data"] == ["setosa"]
    assert srv.proc.wait(TIMEOUT_S) == 0
    assert srv.wait_event("stop")["reason"] == "signal"


SLOW_CODE = """
import time


def make(config):
    def run(v):
        time.sleep(float(v["features"][0, 0]) / 10)  # 1.0 -> 100 ms
        return {}

    return run
"""


def test_a_request_past_its_timeout_gets_504_and_the_server_answers_meanwhile(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    root = slow_guarded_iris(
        tmp_path / "root", models["onnx"], SLOW_CODE, {"http": {"host": "127.0.0.1", "timeout_ms": 500}}
    )
    srv = Server(root, "--http-port", "0").started()
    try:
        srv.wait_event("ready")
        slow = srv.connect()
        started = time.monotonic()
        slow.request("POST", "/predict", body=json.dumps({"features": [[12, 1, 1, 1]]}))
        # while the 1.2-second call runs on the pipeline thread, the loop answers
        assert call(srv, "GET", "/v2/health/live")[0] == 200
        response = slow.getresponse()
        assert (response.status, json.loads(response.read())) == (
            504,
            {"error": "no answer within the request timeout of 0.5 s"},
        )
        assert 0.45 < time.monotonic() - started < 1.1
        time.sleep(1.2 - (time.monotonic() - started))  # the call in progress ends
        status, body, _, _ = call(srv, "POST", "/predict", {"features": [[1, 3, 1, 0.2]]})
        assert status == 200 and body["label"] == ["setosa"]
    finally:
        assert srv.terminate() == 0
