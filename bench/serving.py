"""Serving speed: the kbuild artifact against MLServer 1.7.1, same model, same request;
and the ONNX iris pipeline's artifact against its own in-process call.

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

The same for the ONNX iris pipeline (examples/iris/pipeline.yaml with its lock: an ONNX
model and a classify step), which shows the server's own overhead: its artifact, built
with the same batching, is measured in the same rounds, taking turns with the servers
above, with the same request; its Pipeline.run on one row and its decode-run-encode path
are timed in-process in its own environment at the start of each round, and the report
gives how far its p50 over the wire is above them (per round, then the median).
MLServer 1.7.1 has no ONNX runtime, so there is no MLServer row for it.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, machine, table, wait_http, write_section  # noqa: E402

MODEL = REPO / "examples" / "iris" / "models" / "iris.joblib"
ONNX_PIPELINE = REPO / "examples" / "iris" / "pipeline.yaml"  # model: models/iris.onnx
SPIN = "cpu-linux-x86_64"
BATCHING = {"max_batch_size": 32, "max_latency_ms": 2}  # kbuild's rows, sklearn and ONNX
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
from kbuild.runtime.transports.http_api import _infer_reply
app = Path(sys.argv[1])
spec = PipelineSpec.read(app)
pipeline = Pipeline.load(app, spec)
model = oip.Model(spec)
body = sys.argv[2].encode()
x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
calls = {}
if sys.argv[3] == "sklearn":  # the estimator's own call, beside the pipeline's
    import joblib
    estimator = joblib.load(next((app / "models").rglob("*.joblib")))
    calls["model"] = lambda: estimator.predict(x)

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

calls["pipeline"] = lambda: pipeline.run({"features": x})
calls["path"] = path
for _ in sys.stdin:  # one measurement per line read
    print(json.dumps({name: p50(fn) for name, fn in calls.items()}), flush=True)
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


def flow(mapping: Mapping[str, object]) -> str:
    """A mapping as a YAML flow mapping: {max_batch_size: 32, max_latency_ms: 2}."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def build(work: Path, batching: bool) -> Path:
    """The scikit-learn artifact."""
    folder = work / ("batched" if batching else "plain")
    folder.mkdir(parents=True)
    shutil.copyfile(MODEL, folder / "iris.joblib")
    batch = f"  batching: {flow(BATCHING if batching else {'max_batch_size': 1})}\n"
    (folder / "pipeline.yaml").write_text(PIPELINE.format(batching=batch))
    return compile_pipeline(folder)


def build_onnx(work: Path) -> Path:
    """The example ONNX pipeline's artifact, with its model files and lock, and
    kbuild's batching."""
    folder = work / "onnx"
    folder.mkdir(parents=True)
    spec = yaml.safe_load(ONNX_PIPELINE.read_text())
    for step in spec["steps"]:
        if "model" in step:
            (folder / step["model"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ONNX_PIPELINE.parent / step["model"], folder / step["model"])
    lock = ONNX_PIPELINE.parent / f"{spec['name']}.{SPIN}.lock"
    if lock.is_file():
        shutil.copyfile(lock, folder / lock.name)
    spec["serve"]["batching"] = dict(BATCHING)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return compile_pipeline(folder)


def compile_pipeline(folder: Path) -> Path:
    """kbuild on folder/pipeline.yaml; the zipapp's path."""
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild.cli", "--spin", SPIN, "-o", folder / "dist",
         folder / "pipeline.yaml"],
        capture_output=True, text=True, cwd=REPO, check=False,
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
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE)}
    return rps, lat["50"], lat["99"]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _is(pipeline: dict[str, Any], model_type: str) -> bool:
    """A batched pipeline whose first step is a model of that type."""
    batching = int(pipeline["serve"].get("batching", {}).get("max_batch_size", 1)) > 1
    return batching and pipeline["steps"][0]["type"] == model_type


class Timings:
    """The in-process calls, timed in the artifact's own unpacked environment
    by a process that measures whenever asked, so that each round's numbers
    share that round's conditions. model_type picks the batched artifact
    ("sklearn": also the estimator's own call, as "model"; "onnx")."""

    def __init__(self, env: dict[str, str], model_type: str) -> None:
        apps = Path(env["KBUILD_APP_CACHE"])
        [root] = [p for p in apps.iterdir() if (p / "app" / "pipeline.json").is_file()
                  and _is(json.loads((p / "app" / "pipeline.json").read_text()), model_type)]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TIMING, str(root / "app"), BODY, model_type],
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
    parser.add_argument("--seconds", type=int, default=6, help="wrk run length (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns (default 5)")
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
    servers: list[Server] = []  # all of them, in the order of their turns
    variants: list[Server] = []
    try:
        batched = build(work, batching=True)
        kb = start_kbuild("kbuild", batched, env)
        mls = [start_mlserver(venv, work, w) for w in (0, 1)]
        servers += [kb, *mls]
        onnx = start_kbuild("kbuild, ONNX pipeline", build_onnx(work), env)
        servers.append(onnx)
        if args.variants:
            plain = build(work, batching=False)
            variants.append(start_kbuild("kbuild, batching off", plain, env))
            variants.append(start_kbuild("kbuild, uvloop", batched, env, uvloop))
            servers += variants
        timings, onnx_timings = Timings(env, "sklearn"), Timings(env, "onnx")
        for server in servers:  # caches, pools and the models' first calls
            wrk(server.url, 8, 2, script)
        for round_ in range(args.rounds):
            calls, onnx_calls = timings.measure(), onnx_timings.measure()
            print(f"round {round_ + 1}: model call {calls['model']:.3f} ms, "
                  f"ONNX Pipeline.run {onnx_calls['pipeline']:.3f} ms", file=sys.stderr)  # fmt: skip
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
        onnx_timings.close()
    finally:
        for server in servers:
            if server.name.startswith("MLServer"):
                stop_mlserver(server)
            else:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)

    section = report(kb, mls, onnx, variants, timings.rounds, onnx_timings.rounds, args)
    print(section)
    if args.write:
        write_section("Serving", section)


def report(
    kb: Server,
    mls: list[Server],
    onnx: Server,
    variants: list[Server],
    calls: list[dict[str, float]],
    onnx_calls: list[dict[str, float]],
    args: argparse.Namespace,
) -> str:
    mls0, mls1 = mls
    rows = []
    ratios = []
    for c in CONNECTIONS:
        med = {s.name: tuple(median(r[i] for r in s.results[c]) for i in range(3)) for s in [kb, *mls]}
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
        f"model (`predict`); kbuild with `batching: {flow(BATCHING)}`, "
        f"MLServer with its defaults and `parallel_workers` 0 or 1. {args.rounds} rounds; in each "
        f"the servers (and the ONNX artifact below) take turns (the order rotates) for "
        f"{args.seconds} s each. The machine is "
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
        + fill(setup)
        + "\n\n"
        + table(["connections", "server", "requests/s", "p50 ms", "p99 ms"], rows)
        + "\nkbuild against MLServer's better configuration, per round:\n\n"
        + table(
            ["connections", "MLServer baseline", "requests/s ×", "p50 ratio", "p99 ratio"], ratios
        )
        + "\n"
        + fill(latency)
        + "\n\n"
        + onnx_report(onnx, onnx_calls)
    )
    if variants:
        variant_rows = []
        gains: dict[tuple[str, int], list[float]] = {}
        for s in variants:
            for c in CONNECTIONS:
                times = gains[(s.name, c)] = [v[0] / k[0] for v, k in zip(s.results[c], kb.results[c], strict=True)]
                p50 = median(r[1] for r in s.results[c])
                variant_rows.append([s.name, c, f"{median(r[0] for r in s.results[c]):,.0f}",
                                     f"{median(times):.2f} ({min(times):.2f}–{max(times):.2f})",
                                     f"{p50:.2f}"])  # fmt: skip
        text += "\nStacks considered (same rounds; requests/s relative to kbuild as built, per round):\n\n"
        text += table(
            ["variant", "connections", "requests/s", "× kbuild (range)", "p50 ms"], variant_rows
        )
        text += (
            "\n"
            + fill(
                "Batching is what multiplies throughput under concurrency. uvloop's event loop "
                f"gives {_gains(gains, 'kbuild, uvloop')} (requests/s against kbuild as built, per "
                "round: median, lowest–highest); "
                + (
                    "as long as rounds disagree on whether it helps at all, it does not pay for a "
                    "native dependency in every artifact, so it is not used. "
                    if any(min(g) < 1.0 for (name, _), g in gains.items() if name == "kbuild, uvloop")
                    else "it helps in every round here: a case to reconsider it. "
                )
                + "A second server process was not pursued: on these two cores MLServer's "
                "parallel_workers 1 is slower than 0."
            )
            + "\n"
        )
    return text


def _gains(gains: dict[tuple[str, int], list[float]], name: str) -> str:
    """'×1.12 at 32 connections (rounds 0.77–1.19), ×0.98 at 1 connection (…)'."""
    return ", ".join(
        f"×{_spread(gains[(name, c)], '{:.2f}')} at {c} connection{'s' if c > 1 else ''}"
        for c in sorted(CONNECTIONS, reverse=True)
    )


OVERHEAD_HEADERS = (
    "connections",
    "p50 − `Pipeline.run` ms",
    "p50 − decode-run-encode ms",
    "p50 ÷ `Pipeline.run`",
    "requests/s ÷ in-process (1 / decode-run-encode)",
)


def onnx_report(onnx: Server, calls: list[dict[str, float]]) -> str:
    """The ONNX pipeline's artifact against its own in-process calls: MLServer 1.7.1
    has no ONNX runtime to compare it with."""
    one, many = CONNECTIONS
    run = [t["pipeline"] for t in calls]
    path = [t["path"] for t in calls]
    rows: list[list[object]] = [
        ["in-process: `Pipeline.run`, one row", "–",
         f"{1e3 / median(run):,.0f} (1 / p50)", f"{median(run):.3f}", "–"],
        ["in-process: decode + `Pipeline.run` + encode of the request", "–",
         f"{1e3 / median(path):,.0f} (1 / p50)", f"{median(path):.3f}", "–"],
    ]  # fmt: skip
    for c in CONNECTIONS:
        rps, p50, p99 = (median(r[i] for r in onnx.results[c]) for i in range(3))
        rows.append(["kbuild artifact over HTTP", c, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"])
    # Each round's wire numbers against the in-process calls of the same round.
    # Only at one connection is the p50 one request's time: with more, it is mostly
    # the wait behind the others.
    wire = onnx.results[one]
    above_run = [r[1] - t for r, t in zip(wire, run, strict=True)]
    above_path = [r[1] - t for r, t in zip(wire, path, strict=True)]
    times_run = [r[1] / t for r, t in zip(wire, run, strict=True)]
    codec = [p - t for p, t in zip(path, run, strict=True)]
    # requests/s against one request at a time through decode, Pipeline.run, encode
    limit = {c: [r[0] * t / 1e3 for r, t in zip(onnx.results[c], path, strict=True)]
             for c in CONNECTIONS}  # fmt: skip
    overheads: list[list[object]] = [
        [one, _spread(above_run, "{:.2f}"), _spread(above_path, "{:.2f}"),
         _spread(times_run, "{:.1f}×"), _spread(limit[one], "{:.2f}")],
        [many, "–", "–", "–", _spread(limit[many], "{:.2f}")],
    ]  # fmt: skip
    setup = (
        "The same for the ONNX iris pipeline (`examples/iris/pipeline.yaml` with its lock: an "
        "ONNX model and a `classify` step, answering `label` and `probability`), which shows "
        f"the server's own overhead: its artifact is built with `batching: {flow(BATCHING)}` "
        f"like the kbuild row above, gets the same request from wrk at {one} and {many} "
        "connections, and is measured in the same rounds, taking turns with the servers above. "
        "MLServer 1.7.1 has no ONNX runtime among its inference runtimes, so this table compares "
        "the artifact with its in-process limit only: `Pipeline.run` on one row and the whole "
        "decode + `Pipeline.run` + encode path of one request, timed in-process in the "
        "artifact's environment at the start of each round (their requests/s: one call at a "
        "time, 1 / p50)."
    )
    analysis = (
        f"At {one} connection the artifact's p50 over the wire is {median(above_run):.2f} ms "
        f"above `Pipeline.run` (median of rounds; {min(above_run):.2f} to "
        f"{max(above_run):.2f} ms); decoding the request and encoding the answer account for "
        f"{median(codec):.3f} ms of that, and the remaining {median(above_path):.2f} ms is the "
        "server and the loopback round trip (HTTP, the event loop, the batcher, wrk's side). "
        f"At {many} connections it answers {median(limit[many]):.2f}× as many requests per "
        "second as the in-process decode + `Pipeline.run` + encode path run one request at a "
        "time (median of rounds)."
    )
    return (
        fill(setup)
        + "\n\n"
        + table(["measured", "connections", "requests/s", "p50 ms", "p99 ms"], rows)
        + "\n"
        + fill("The artifact over HTTP against the in-process calls of the same round (median "
               "over rounds, lowest–highest in parentheses):")
        + "\n\n"
        + table(OVERHEAD_HEADERS, overheads)
        + "\n"
        + fill(analysis)
        + "\n"
    )


def fill(text: str) -> str:
    """A paragraph at 92 columns, never broken inside a hyphenated word."""
    return textwrap.fill(text, 92, break_on_hyphens=False)


def _spread(values: list[float], fmt: str) -> str:
    """median (lowest–highest)"""
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


if __name__ == "__main__":
    main()
