"""The iris-mqtt example built and served: a mosquitto_pub request answered
through a real mosquitto, an MQTT 5 request answered on its own topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.build import build_example, free_port
from tests.helpers.mqtt_broker import Mosquitto
from tests.runtime.transports.test_mqtt import publish, received, subscribe


def test_the_example_answers_mosquitto_pub(mosquitto: Mosquitto, tmp_path: Path) -> None:
    built = build_example(tmp_path, "pipeline.yaml", example="iris-mqtt")
    assert built.report["endpoints"] == ["http", "mqtt"]
    port = free_port()
    env = {**os.environ, "KBUILD_MQTT_BROKER": mosquitto.address}
    with subprocess.Popen(
        [sys.executable, str(built.artifact), "--http-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stderr is not None
            deadline = time.monotonic() + 60
            for line in server.stderr:  # ready: subscribed
                if '"mqtt-connected"' in line or time.monotonic() > deadline:
                    break
            time.sleep(0.5)
            answers = subscribe(mosquitto, "iris/responses", 1)
            publish(mosquitto, "iris/requests/sensor-7", json.dumps({"id": 7, "features": [[6.7, 3.0, 5.2, 2.3]]}))
            [answer] = received(answers)
            assert answer["id"] == 7 and answer["label"] == ["virginica"]
        finally:
            server.terminate()
            assert server.wait(60) == 0
