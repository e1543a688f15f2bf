"""Serving speed: the kbuild artifact against MLServer 1.7.1, same model, same request.

    python bench/serving.py                      # prints the Markdown section
    python bench/serving.py --write              # and puts it into BENCHMARKS.md
    python bench/serving.py --variants           # also the server stacks considered

Both servers serve one scikit-learn iris estimator (examples/iris/models/iris.joblib,
method predict) under the model name "iris" and get the same Open Inference Protocol
JSON request (one row of four FP32 features) from wrk, at 1 and 32 connections.
MLServer runs from its own virtual environment under the kbuild cache
(mlserver==1.7.1, mlserver-sklearn==1.7.1, uvloop==0.21.0, and the scikit-learn
version that saved the model), with its default adaptive batching off, once with
parallel_workers 0 and once with 1; its better one at each connection count is the
baseline. The three servers run side by side and are measured in turns, round after
round, so that the noise of a shared machine hits them alike; the table gives medians
over the rounds and the ratio of medians.

The model call itself (estimator.predict on one row) and the artifact's pipeline call
(kbuild's Pipeline.run, and the whole decode-run-encode path of one request) are timed
in-process in the artifact's own environment, for the latency overhead.

--variants adds the stacks considered for the server, each at 1 and 32 connections:
batching off, and uvloop's event loop in place of asyncio's (swapped in by a launcher:
the artifact itself runs on asyncio's loop).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, machine, table, wait_http, write_section  # noqa: E402

MODEL = REPO / "examples" / "iris" / "models" / "iris.joblib"
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
UVLOOP = "uvloop==0.22.1"
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps(
    {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
)
CONNECTIONS = (1, 32)
COMMAND = "python bench/serving.py --write"

PIPELINE = """\
kbuild: 1
name: iris
version: "1"
inputs:
  features: {{datatype: FP32, shape: [-1, 4]}}
outputs:
  predict: {{datatype: INT64, shape: [-1]}}
steps:
  - name: model
    type: sklearn
    model: iris.joblib
    method: predict
    input: features
    output: predict
serve:
  http: {{port: 8080}}
{batching}"""

TIMING = """
import json, sys, time
from pathlib import Path
import numpy as np
from kbuild.runtime import oip
from kbuild.runtime.pipeline import Pipeline, PipelineSpec
from kbuild.runtime.server.http_api import _infer_reply
app = Path(sys.argv[1])
spec = PipelineSpec.read(app)
pipeline = Pipeline.load(app, spec)
model = oip.Model(spec)
import joblib
estimator = joblib.load(next((app / "models").rglob("*.joblib")))
body = sys.argv[2].encode()
x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)

def path():
    request = oip.read_request(model, json.loads(body))
    return _infer_reply(model, request, pipeline.run(request.inputs)).body

def p50(fn, n=2000):
    for _ in range(200):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3

for _ in sys.stdin:  # one measurement per line read
    print(json.dumps({
        "model": p50(lambda: estimator.predict(x)),
        "pipeline": p50(lambda: pipeline.run({"features": x})),
        "path": p50(path),
    }), flush=True)
"""


@dataclass
class Server:
    name: str
    url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    results: dict[int, list[tuple[float, float, float]]] = field(default_factory=dict)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cache_root() -> Path:
    configured = os.environ.get("KBUILD_CACHE_DIR")
    base = Path(configured).expanduser() if configured else Path.home() / ".cache" / "kbuild"
    return base / "bench"


def sklearn_version() -> str:
    sys.path.insert(0, str(REPO))
    from kbuild.model_info import sklearn_version as read

    version = read(MODEL)
    if not version:
        raise SystemExit(f"cannot tell which scikit-learn saved {MODEL}")
    return version


def mlserver_venv() -> Path:
    """MLServer's own environment, made once."""
    venv = cache_root() / "mlserver-1.7.1"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    pins = [*MLSERVER, f"scikit-learn=={sklearn_version()}"]
    if marker.exists() and marker.read_text() == "\n".join(pins):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    marker.write_text("\n".join(pins))
    return venv


def uvloop_dir() -> Path:
    target = cache_root() / "uvloop"
    if not (target / "uvloop").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), UVLOOP],
            check=True,
        )
    return target


def build(work: Path, batching: bool) -> Path:
    folder = work / ("batched" if batching else "plain")
    folder.mkdir(parents=True)
    shutil.copyfile(MODEL, folder / "iris.joblib")
    size = "32, max_latency_ms: 2" if batching else "1"
    batch = f"  batching: {{max_batch_size: {size}}}\n"
    (folder / "pipeline.yaml").write_text(PIPELINE.format(batching=batch))
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild.cli", "--spin", "cpu-linux-x86_64", "-o", folder / "dist",
         folder / "pipeline.yaml"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"kbuild failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_kbuild(
    name: str, artifact: Path, env: dict[str, str], uvloop: Path | None = None
) -> Server:
    port = free_port()
    if uvloop is None:
        command = [sys.executable, str(artifact), "serve", "--http-port", str(port)]
    else:
        # The standard event loop policy swapped for uvloop's before the artifact starts.
        launcher = (
            "import asyncio, runpy, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
            f"sys.argv = [{str(artifact)!r}, 'serve', '--http-port', '{port}']; "
            f"runpy.run_path({str(artifact)!r}, run_name='__main__')"
        )
        command = [sys.executable, "-c", launcher]
        env = {**env, "PYTHONPATH": str(uvloop)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, f"http://127.0.0.1:{port}/v2/models/iris/infer", [proc])
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return server


def start_mlserver(venv: Path, work: Path, workers: int) -> Server:
    folder = work / f"mlserver-{workers}"
    folder.mkdir()
    shutil.copyfile(MODEL, folder / "iris.joblib")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./iris.joblib", "version": "1"},
    }))  # fmt: skip
    (folder / "settings.json").write_text(json.dumps({
        "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": workers, "debug": False,
    }))  # fmt: skip
    proc = subprocess.Popen(
        [str(venv / "bin" / "mlserver"), "start", "."],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    server = Server(f"MLServer 1.7.1, parallel_workers {workers}",
                    f"http://127.0.0.1:{http_port}/v2/models/iris/infer", [proc])  # fmt: skip
    wait_http(f"http://127.0.0.1:{http_port}/v2/models/iris/ready", proc)
    return server


def stop_mlserver(server: Server) -> None:
    # MLServer's worker processes are its children: end the whole session.
    for proc in server.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    server.stop()


def wrk(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms"""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    return rps, lat["50"], lat["99"]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _batched(pipeline: dict[str, Any]) -> bool:
    return int(pipeline["serve"].get("batching", {}).get("max_batch_size", 1)) > 1


class Timings:
    """The in-process calls, timed in the artifact's own unpacked environment
    by a process that measures whenever asked, so that each round's numbers
    share that round's conditions."""

    def __init__(self, env: dict[str, str]) -> None:
        apps = Path(env["KBUILD_APP_CACHE"])
        [root] = [p for p in apps.iterdir() if (p / "app" / "pipeline.json").is_file()
                  and _batched(json.loads((p / "app" / "pipeline.json").read_text()))]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TIMING, str(root / "app"), BODY],
            env={**env, "PYTHONPATH": str(root / "site")},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.rounds: list[dict[str, float]] = []

    def measure(self) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        result = {k: float(v) for k, v in json.loads(self.proc.stdout.readline()).items()}
        self.rounds.append(result)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="wrk run length (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns (default 3)")
    parser.add_argument("--variants", action="store_true", help="also the stacks considered")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    venv = mlserver_venv()
    uvloop = uvloop_dir() if args.variants else None
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-serving-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    script = work / "infer.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    servers: list[Server] = []
    try:
        batched = build(work, batching=True)
        servers.append(start_kbuild("kbuild", batched, env))
        mls = [start_mlserver(venv, work, w) for w in (0, 1)]
        servers += mls
        if args.variants:
            plain = build(work, batching=False)
            servers.append(start_kbuild("kbuild, batching off", plain, env))
            servers.append(start_kbuild("kbuild, uvloop", batched, env, uvloop))
        timings = Timings(env)
        for server in servers:  # caches, pools and sklearn's first calls
            wrk(server.url, 8, 2, script)
        for round_ in range(args.rounds):
            calls = timings.measure()
            print(f"round {round_ + 1}: model call {calls['model']:.3f} ms", file=sys.stderr)
            # The order rotates from round to round, and each server gets a short
            # run of its own right before it is measured, so that none is always
            # the one measured after a switch.
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for connections in CONNECTIONS:
                for server in order:
                    wrk(server.url, connections, 1, script)
                    result = wrk(server.url, connections, args.seconds, script)
                    server.results.setdefault(connections, []).append(result)
                    print(f"round {round_ + 1}, {connections:2d} connections, {server.name}: "
                          f"{result[0]:.0f} req/s, p50 {result[1]:.2f} ms, p99 {result[2]:.2f} ms",
                          file=sys.stderr)  # fmt: skip
        timings.close()
    finally:
        for server in servers:
            if server.name.startswith("MLServer"):
                stop_mlserver(server)
            else:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)

    section = report(servers, timings.rounds, args)
    print(section)
    if args.write:
        write_section("Serving", section)


def report(servers: list[Server], calls: list[dict[str, float]], args: argparse.Namespace) -> str:
    kb, mls0, mls1 = servers[:3]
    rows = []
    ratios = []
    for c in CONNECTIONS:
        med = {s.name: tuple(median(r[i] for r in s.results[c]) for i in range(3)) for s in servers}
        best = max((mls0, mls1), key=lambda s: med[s.name][0])
        for s in [kb, mls0, mls1]:
            rps, p50, p99 = med[s.name]
            rows.append([c, s.name, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"])
        # Ratios of the same round: both servers met the same load on the machine.
        paired = [(k[0] / b[0], k[1] / b[1], k[2] / b[2])
                  for k, b in zip(kb.results[c], best.results[c], strict=True)]  # fmt: skip
        ratios.append([
            c, best.name.split(", ")[1],
            f"{median(r[0] for r in paired):.1f}× (lowest {min(r[0] for r in paired):.1f}×)",
            f"{median(r[1] for r in paired):.2f}", f"{median(r[2] for r in paired):.2f}",
        ])  # fmt: skip
    overheads = [r[1] - t["model"] for r, t in zip(kb.results[1], calls, strict=True)]
    model = median(t["model"] for t in calls)
    setup = (
        f"{machine()}. Command: `{COMMAND}` (this run: `--seconds {args.seconds} --rounds "
        f"{args.rounds}{' --variants' if args.variants else ''}`). wrk (1 thread) sends one OIP JSON "
        "request (1×4 FP32) to `/v2/models/iris/infer`; both servers run the scikit-learn iris "
        "model (`predict`); kbuild with `batching: {max_batch_size: 32, max_latency_ms: 2}`, "
        f"MLServer with its defaults and `parallel_workers` 0 or 1. {args.rounds} rounds; in each "
        f"the servers take turns (the order rotates) for {args.seconds} s each. The machine is "
        "shared with other work and single runs vary widely, so the tables give medians over "
        "rounds, and ratios are taken within a round."
    )
    latency = (
        "Latency at 1 connection against the model call itself: the model call "
        "(`estimator.predict` on one row, in-process in the artifact's environment, measured at "
        f"the start of each round) takes {model:.3f} ms (median); kbuild's pipeline call "
        f"{median(t['pipeline'] for t in calls):.3f} ms; decode + pipeline + encode of the "
        f"request {median(t['path'] for t in calls):.3f} ms. kbuild's p50 over the wire is above "
        f"the model call by {median(overheads):.2f} ms (median of rounds; {min(overheads):.2f} "
        f"to {max(overheads):.2f} ms)."
    )
    text = (
        "## Serving\n\n"
        + textwrap.fill(setup, 92)
        + "\n\n"
        + table(["connections", "server", "requests/s", "p50 ms", "p99 ms"], rows)
        + "\nkbuild against MLServer's better configuration, per round:\n\n"
        + table(
            ["connections", "MLServer baseline", "requests/s ×", "p50 ratio", "p99 ratio"], ratios
        )
        + "\n"
        + textwrap.fill(latency, 92)
        + "\n"
    )
    if len(servers) > 3:
        variant_rows = []
        for s in servers[3:]:
            for c in CONNECTIONS:
                paired = [v[0] / k[0] for v, k in zip(s.results[c], kb.results[c], strict=True)]
                p50 = median(r[1] for r in s.results[c])
                variant_rows.append([s.name, c, f"{median(r[0] for r in s.results[c]):,.0f}",
                                     f"{median(paired):.2f} ({min(paired):.2f}–{max(paired):.2f})",
                                     f"{p50:.2f}"])  # fmt: skip
        text += "\nStacks considered (same rounds; requests/s relative to kbuild as built, per round):\n\n"
        text += table(
            ["variant", "connections", "requests/s", "× kbuild (range)", "p50 ms"], variant_rows
        )
        text += (
            "\n"
            + textwrap.fill(
                "Batching is what multiplies throughput under concurrency. uvloop is not used: its "
                "gain is within the noise of the rounds and would add a native dependency to every "
                "artifact. A second server process was not pursued: on these two cores MLServer's "
                "parallel_workers 1 is slower than 0.",
                92,
            )
            + "\n"
        )
    return text


if __name__ == "__main__":
    main()
