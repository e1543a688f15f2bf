"""The servers the serving benchmark runs, how it builds and starts them, and
the in-process timings it compares them with (bench/serving.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, wait_http  # noqa: E402

MODEL = REPO / "examples" / "iris" / "models" / "iris.joblib"
ONNX_PIPELINE = REPO / "examples" / "iris" / "pipeline.yaml"  # model: models/iris.onnx
SPIN = "cpu-linux-x86_64"
BATCHING = {"max_batch_size": 32, "max_latency_ms": 2}  # kbuild's rows, sklearn and ONNX
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
UVLOOP = "uvloop==0.22.1"
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})

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
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.transports.http_api import infer_reply
app = Path(sys.argv[1])
spec = PipelineSpec.read(app)
pipeline = PipelineRunner.load(app, spec)
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
    return infer_reply(model, request, pipeline.run(request.inputs)).body

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
    from kbuild.plan.model_info import sklearn_version as read

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
        [sys.executable, "-m", "kbuild.cli", "--spin", SPIN, "-o", folder / "dist", folder / "pipeline.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"kbuild failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_kbuild(name: str, artifact: Path, env: dict[str, str], uvloop: Path | None = None) -> Server:
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
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./iris.joblib", "version": "1"},
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "parallel_workers": workers,
                "debug": False,
            }
        )
    )
    proc = subprocess.Popen(
        [str(venv / "bin" / "mlserver"), "start", "."],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server(
        f"MLServer 1.7.1, parallel_workers {workers}", f"http://127.0.0.1:{http_port}/v2/models/iris/infer", [proc]
    )
    wait_http(f"http://127.0.0.1:{http_port}/v2/models/iris/ready", proc)
    return server


def stop_mlserver(server: Server) -> None:
    # MLServer's worker processes are its children: end the whole session.
    for proc in server.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    server.stop()


def wrk(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms; any failed request ends the benchmark."""
    rps, p50, p99, failed = wrk_counting(url, connections, seconds, script)
    if failed:
        raise SystemExit(f"wrk saw {failed} failed requests against {url}")
    return rps, p50, p99


def wrk_counting(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms and the requests that failed (non-2xx
    answers, socket errors), counted."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE)}
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return rps, lat.get("50", 0.0), lat.get("99", 0.0), failed


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _is(pipeline: dict[str, Any], model_type: str) -> bool:
    """A batched pipeline whose first step is a model of that type."""
    batching = int(pipeline["serve"].get("batching", {}).get("max_batch_size", 1)) > 1
    return batching and pipeline["steps"][0]["type"] == model_type


# How a TimedProcess script that times an artifact's pipeline as its server
# runs it begins: the pipeline loaded from the app folder (argv[1]) with the
# thread count the runtime gives the model libraries.
LOAD_PIPELINE = """
import dataclasses, json, os, sys, time
from pathlib import Path
import numpy as np
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.threads import process_cpu_budget
app = Path(sys.argv[1])
spec = dataclasses.replace(PipelineSpec.read(app), threads=process_cpu_budget(os.environ))
pipeline = PipelineRunner.load(app, spec)
"""


class TimedProcess:
    """A process, in an artifact's own unpacked environment (root/site first
    on the path), that runs `script` and prints one JSON object of timings
    each time it is asked, so that each round's numbers share that round's
    conditions."""

    def __init__(self, root: Path, env: dict[str, str], script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(root / "app"), *args],
            env={**env, "PYTHONPATH": str(root / "site")},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.rounds: list[dict[str, float]] = []

    def measure(self, what: str = "go") -> dict[str, float]:
        """One line of timings; `what` is the line sent, for scripts that time
        more than one thing."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        result = {k: float(v) for k, v in json.loads(self.proc.stdout.readline()).items()}
        self.rounds.append(result)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


class Timings(TimedProcess):
    """The in-process calls of the batched artifact whose first step is a
    model of model_type ("sklearn": also the estimator's own call, as
    "model"; "onnx")."""

    def __init__(self, env: dict[str, str], model_type: str) -> None:
        apps = Path(env["KBUILD_APP_CACHE"])
        [root] = [
            p
            for p in apps.iterdir()
            if (p / "app" / "pipeline.json").is_file()
            and _is(json.loads((p / "app" / "pipeline.json").read_text()), model_type)
        ]
        super().__init__(root, env, TIMING, BODY, model_type)
