"""Graph pipelines and MQTT, against what they cost without kbuild.

    python bench/graph_mqtt.py            # prints the Markdown section
    python bench/graph_mqtt.py --write    # and puts it into BENCHMARKS.md

Graph: examples/wine-graph (an ONNX and a LightGBM model averaged, a switch on
a request field, a keyed split) built and served over HTTP; wrk sends one row
at 1 and 32 connections. Its baseline is the same work called in sequence
in-process, in the artifact's own environment: the ONNX session, the LightGBM
booster, the weighted mean and the argmax for one row. The overhead per
request is the artifact's p50 over the wire minus that call.

MQTT: examples/iris-mqtt served through a local mosquitto at QoS 1. A paho
client sends requests with an MQTT 5 response topic and waits for each answer
(1 in flight), then keeps 32 in flight; the baseline is mosquitto's own round
trip for the same payload with no pipeline (a client publishing to a topic it
subscribes to). Rounds alternate between the artifact and the baseline.
Needs wrk and mosquitto (scripts/test-tools.sh unpacks the latter).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, free_port, kbuild, machine, median, post_script, table, turns_options, wait_http, write_section  # noqa: E402
from serving_servers import wrk  # noqa: E402

COMMAND = "python bench/graph_mqtt.py --write"
ROW = json.loads((REPO / "examples/wine-graph/heldout.json").read_text())["inputs"]
BODY = json.dumps({"features": ROW["features"][:1], "region": ["eu"], "customer": ["c1"]})
IRIS = json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]]}).encode()

TIMING = """
import json, sys, time
import numpy as np, onnxruntime as ort, lightgbm as lgb
app = sys.argv[1]
x = np.array(json.loads(sys.argv[2]), dtype=np.float32)
session = ort.InferenceSession(app + "/models/lr/wine.onnx", providers=["CPUExecutionProvider"])
booster = lgb.Booster(model_file=app + "/models/gb/wine_lgbm.txt")
def call():
    p = 0.7 * session.run(["probabilities"], {"X": x})[0] + 0.3 * booster.predict(x)
    return p.argmax(axis=1)
for _ in range(300): call()
times = []
for _ in range(3000):
    t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2] * 1e3}))
"""


def build(example: str, work: Path) -> Path:
    folder = work / example
    shutil.copytree(REPO / "examples" / example, folder, ignore=shutil.ignore_patterns("dist"))
    proc = kbuild("--spin", "cpu-linux-x86_64", "-q", "-o", work / "dist", folder / "pipeline.yaml")
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return Path(proc.stdout.strip().splitlines()[-1])


def graph_rounds(artifact: Path, env: dict[str, str], rounds: int, seconds: int) -> dict[str, Any]:
    port = free_port()
    script = post_script(Path(tempfile.mkstemp(suffix=".lua")[1]), BODY)
    server = subprocess.Popen(
        [sys.executable, str(artifact), "serve", "--http-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", server)
        [root] = [p for p in Path(env["KBUILD_APP_CACHE"]).iterdir() if (p / "app" / "pipeline.json").is_file()]
        timing_env = {**env, "PYTHONPATH": str(root / "site")}
        results: dict[str, list[float]] = {"call": [], "p50_1": [], "p99_1": [], "rps_32": [], "p99_32": []}
        for _ in range(rounds):
            timed = subprocess.run(
                [sys.executable, "-c", TIMING, str(root / "app"), json.dumps(ROW["features"][:1])],
                env=timing_env,
                capture_output=True,
                text=True,
                check=True,
            )
            results["call"].append(json.loads(timed.stdout)["p50_ms"])
            _, p50, p99 = wrk(f"http://127.0.0.1:{port}/predict", 1, seconds, script)
            results["p50_1"] += [p50]
            results["p99_1"] += [p99]
            rps, _, p99_32 = wrk(f"http://127.0.0.1:{port}/predict", 32, seconds, script)
            results["rps_32"] += [rps]
            results["p99_32"] += [p99_32]
        return results
    finally:
        server.terminate()
        server.wait(30)


class Requester:
    """A paho client that sends a payload and waits for the answer on its own
    response topic (or, as the baseline, on the topic it publishes to)."""

    def __init__(self, port: int, topic: str, reply: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.topic = topic
        self.properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if reply != topic:
            self.properties.ResponseTopic = reply
        self.pending: dict[bytes, float] = {}
        self.times: list[float] = []
        self.lock = threading.Condition()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self.arrived
        self.client.connect("127.0.0.1", port)
        # as the artifact does: Nagle's algorithm would hold requests for the broker's delayed ACK
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        self.client.loop_start()
        self.client.subscribe(reply, qos=1)
        time.sleep(0.5)
        self.counter = 0

    def arrived(self, client: Any, userdata: Any, message: Any) -> None:
        key = bytes(getattr(message.properties, "CorrelationData", b"") or message.payload[-8:])
        with self.lock:
            sent = self.pending.pop(key, None)
            if sent is not None:
                self.times.append(time.perf_counter() - sent)
            self.lock.notify_all()

    def run(self, payload: bytes, in_flight: int, seconds: float) -> tuple[float, float, float]:
        """requests/s, p50 ms, p99 ms"""
        self.times = []
        end = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            with self.lock:
                while len(self.pending) >= in_flight:
                    if time.perf_counter() > end + 10:
                        raise SystemExit(
                            f"{len(self.pending)} answers did not come on {self.topic} (see the artifact's log)"
                        )
                    self.lock.wait(1.0)
                self.counter += 1
                key = self.counter.to_bytes(8, "big")
                self.pending[key] = time.perf_counter()
            self.properties.CorrelationData = key
            body = payload if self.topic.startswith("iris/requests") else payload + key
            self.client.publish(self.topic, body, qos=1, properties=self.properties)
        with self.lock:
            while self.pending and time.perf_counter() < end + 5:
                self.lock.wait(0.5)
        elapsed = time.perf_counter() - started
        times = sorted(self.times)
        return len(times) / elapsed, times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_rounds(artifact: Path, env: dict[str, str], rounds: int, seconds: int) -> dict[str, list[float]]:
    mosquitto = shutil.which("mosquitto")
    if mosquitto is None:
        raise SystemExit("mosquitto is not on PATH: run scripts/test-tools.sh and put the folder it prints on PATH")
    work = Path(tempfile.mkdtemp())
    port, http = free_port(), free_port()
    # set_tcp_nodelay: without it mosquitto holds small messages for a delayed ACK (~40 ms)
    (work / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    broker = subprocess.Popen(
        [mosquitto, "-c", str(work / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = subprocess.Popen(
        [sys.executable, str(artifact), "--http-port", str(http)],
        env={**env, "KBUILD_MQTT_BROKER": f"127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=(work / "artifact.log").open("wb"),
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/v2/health/ready", server)
        results: dict[str, list[float]] = {
            k: [] for k in ("kb1", "kb1_99", "echo1", "echo1_99", "kb32", "kb32_99", "echo32")
        }
        for _ in range(rounds):
            for name, topic, reply in (
                ("kb", "iris/requests/bench", "bench/inbox"),
                ("echo", "bench/echo", "bench/echo"),
            ):
                requester = Requester(port, topic, reply)  # a fresh client and fresh counts for each
                rps1, p50, p99 = requester.run(IRIS, 1, seconds)
                results[f"{name}1"].append(p50)
                if name == "kb":
                    results["kb1_99"].append(p99)
                else:
                    results["echo1_99"].append(p99)
                rps32, _, p99_32 = requester.run(IRIS, 32, seconds)
                results[f"{name}32"].append(rps32)
                if name == "kb":
                    results["kb32_99"].append(p99_32)
                requester.close()
        return results
    finally:
        server.terminate()
        server.wait(30)
        broker.terminate()
        broker.wait(10)


def main() -> None:
    args = turns_options(__doc__, seconds=5, rounds=3).parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-graph-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    graph = graph_rounds(build("wine-graph", work), env, args.rounds, args.seconds)
    mqtt = mqtt_rounds(build("iris-mqtt", work), env, args.rounds, args.seconds)
    overhead = [w - c for w, c in zip(graph["p50_1"], graph["call"], strict=True)]
    section = "\n".join(
        [
            "## Graphs and MQTT",
            "",
            f"`{COMMAND}` ({args.rounds} rounds of {args.seconds} s; medians, spread over rounds in brackets). {machine()}",
            "",
            "**Graph** (examples/wine-graph: ONNX and LightGBM averaged, a switch, a keyed split; one row per request over HTTP) "
            "against the same two models, the weighted mean and the argmax called in sequence in-process:",
            "",
            table(
                ["", "value"],
                [
                    ["in-process call, p50", f"{median(graph['call']):.3f} ms"],
                    [
                        "artifact over HTTP, 1 connection, p50 / p99",
                        f"{median(graph['p50_1']):.3f} / {median(graph['p99_1']):.3f} ms",
                    ],
                    [
                        "overhead of the graph and the server, 1 connection",
                        f"{median(overhead):.3f} ms ({min(overhead):.3f}–{max(overhead):.3f})",
                    ],
                    [
                        "artifact over HTTP, 32 connections",
                        f"{median(graph['rps_32']):,.0f} req/s, p99 {median(graph['p99_32']):.2f} ms",
                    ],
                    ["in-process, one call at a time", f"{1000 / median(graph['call']):,.0f} calls/s"],
                    [
                        "32 connections against one-at-a-time in-process",
                        f"{median(graph['rps_32']) * median(graph['call']) / 1000:.2f}×",
                    ],
                ],
            ),
            "",
            "**MQTT** at QoS 1 through a local mosquitto (examples/iris-mqtt; MQTT 5 response topic and correlation data) "
            "against mosquitto's own round trip of the same payload with no pipeline:",
            "",
            table(
                ["", "artifact", "mosquitto round trip"],
                [
                    ["1 in flight, p50", f"{median(mqtt['kb1']):.3f} ms", f"{median(mqtt['echo1']):.3f} ms"],
                    ["1 in flight, p99", f"{median(mqtt['kb1_99']):.3f} ms", f"{median(mqtt['echo1_99']):.3f} ms"],
                    [
                        "32 in flight",
                        f"{median(mqtt['kb32']):,.0f} req/s (p99 {median(mqtt['kb32_99']):.2f} ms)",
                        f"{median(mqtt['echo32']):,.0f} msg/s",
                    ],
                ],
            ),
            "",
            f"The artifact's MQTT rate is {median(mqtt['kb32']) / median(mqtt['echo32']):.2f}× the broker's round trip at 32 in flight "
            f"(per round: {', '.join(f'{a / b:.2f}' for a, b in zip(mqtt['kb32'], mqtt['echo32'], strict=True))}); "
            f"the p50 at 1 in flight is {median(mqtt['kb1']) - median(mqtt['echo1']):.3f} ms above it.",
            "",
        ]
    )
    print(section)
    if args.write:
        write_section("Graphs and MQTT", section)


if __name__ == "__main__":
    main()
