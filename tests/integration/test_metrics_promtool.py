"""Every metric an artifact exports passes Prometheus' own checker, promtool
(unpacked from Debian's prometheus package by scripts/test-tools.sh)."""

from __future__ import annotations

import shutil
import subprocess

from kbuild.runtime.metrics import Metrics
from kbuild.runtime.streaming.metrics import StreamMetrics, measure_lags
from tests.helpers.build import component_missing
from tests.helpers.served import Served


def promtool_check(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        component_missing("promtool is not on PATH: run scripts/test-tools.sh and put the folder it prints on PATH")
        return
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


def test_the_http_artifacts_metrics_pass_promtool(served: Served) -> None:
    conn = served.connect()
    conn.request("POST", "/predict", body=b'{"features": [[5.1, 3.5, 1.4, 0.2]]}')
    conn.getresponse().read()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read()
    assert b"kbuild_requests_total{" in text and b"kbuild_request_duration_seconds_bucket{" in text
    promtool_check(text)


def test_the_stream_metrics_pass_promtool() -> None:
    metrics = Metrics("iris", "1.0.0")
    stream = StreamMetrics()
    metrics.add_collector(stream.collect)
    stream.records_in += 3
    stream.set_lag(
        measure_lags(
            {("data", 0): 50, ("data", 1): 20},
            {("data", 0): 45, ("data", 1): 18},
            {("data", 0): 30, ("data", 1): -1001},
        )
    )
    text = metrics.render()
    assert b"kbuild_kafka_consumer_lag_overall 7" in text
    assert b'kbuild_kafka_consumer_commit_lag{topic="data",partition="0"} 20' in text
    assert b"kbuild_kafka_consumer_commit_lag_overall 20" in text  # partition 1: nothing committed, not reported
    promtool_check(text)
