"""How bench/peers.py starts each server on each model, what it sends, and how
it checks the answer before measuring.

Every peer runs from its own environment (bench/peer_envs.py) with the shared
handlers (bench/peers/handlers.py); kbuild runs its artifacts. Each server is
started in its own session, so that the whole process tree (workers, the
Triton server PyTriton starts) is measured and stopped together.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, wait_http  # noqa: E402
from peer_envs import venv_of  # noqa: E402
from serving_servers import MODEL, ROW  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent / "peers"
EXAMPLES = REPO / "examples"
TEXT = "The striker scored a late goal in the derby."
IMAGE = base64.b64encode((EXAMPLES / "image-cnn" / "samples" / "circle.png").read_bytes()).decode()
# model -> (the row sent, what a right answer says)
ROWS: dict[str, tuple[Any, Any]] = {"tabular": (ROW, 0), "text": (TEXT, "sport"), "cnn": (IMAGE, "circle")}
FIELDS = {"tabular": "features", "text": "text", "cnn": "image"}
LABELS = {"text": {"sport", "weather", "cooking"}, "cnn": {"circle", "square", "triangle"}}


def oip_body(model: str, batch_dim: bool = False) -> str:
    """One row in the Open Inference Protocol's JSON (batch_dim: BYTES as [1, 1],
    as Triton's batched models declare them)."""
    row, _ = ROWS[model]
    if model == "tabular":
        tensor = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": row}
    else:
        tensor = {"name": FIELDS[model], "shape": [1, 1] if batch_dim else [1], "datatype": "BYTES", "data": [row]}
    return json.dumps({"inputs": [tensor]})


def own_body(model: str) -> str:
    """One row in the peers' own JSON: {"features": [[...]]}, {"text": ["..."]}."""
    row, _ = ROWS[model]
    return json.dumps({FIELDS[model]: [row]})


def right_answer(model: str, reply: Any) -> bool:
    """Whether a reply, in whichever JSON the server speaks, says what the
    model says of the row: every label in it (or every integer, for the
    tabular class index) is the expected one."""
    found: list[Any] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in ("shape", "id", "model_name", "model_version", "parameters"):
                    walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif model == "tabular" and isinstance(value, int) and not isinstance(value, bool):
            found.append(value)
        elif model != "tabular" and isinstance(value, str) and value in LABELS[model]:
            found.append(value)

    walk(reply)
    return bool(found) and all(v == ROWS[model][1] for v in found)


@dataclass
class Running:
    name: str
    url: str
    body: str
    procs: list[subprocess.Popen[bytes]]
    ready_s: float
    # per connection count, per round: requests/s, p50 ms, p99 ms, failed requests
    results: dict[int, list[tuple[float, float, float, int]]] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    size_mib: float = 0.0
    script: Path | None = None  # wrk's script sending `body`
    pausable: bool = True

    def tree(self) -> list[int]:
        """The pids of the server's processes: its session's, and every
        descendant (a worker may start a session of its own)."""
        parents: dict[int, int] = {}
        sessions: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)], sessions[int(entry.name)] = int(fields[1]), int(fields[3])
        found = {proc.pid for proc in self.procs if proc.pid in parents}
        found |= {pid for pid, sid in sessions.items() if sid in found}
        changed = True
        while changed:
            grown = found | {pid for pid, parent in parents.items() if parent in found}
            changed, found = grown != found, grown
        return sorted(found)

    def read_peak_rss(self) -> None:
        """The sum of the session's processes' peak resident sets (VmHWM)."""
        self.peak_rss_mib = self.memory_mib("VmHWM")

    def memory_mib(self, field: str) -> float:
        """The sum of one /proc/PID/status memory field (VmRSS, VmHWM) over
        the session's processes."""
        total = 0
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(f"{field}:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def signal_all(self, signum: int) -> None:
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pause(self) -> None:
        """Stopped while the others are measured: a server that polls while
        idle (LitServe's workers take a fifth of a core) would slow them."""
        if self.pausable:
            self.signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        if self.pausable:
            self.signal_all(signal.SIGCONT)
            time.sleep(0.2)

    def stop(self) -> None:
        self.signal_all(signal.SIGCONT)
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def start_server(
    name: str,
    command: list[str],
    ready: str,
    url: str,
    body: str,
    env: dict[str, str] | None = None,
    cwd: Path = PEERS_DIR,
) -> Running:
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(ready, proc, timeout=300)
    except RuntimeError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    return Running(name, url, body, [proc], time.perf_counter() - start)


def _python(peer: str) -> str:
    return str(venv_of(peer) / "bin" / "python")


def _peer_env(model: str) -> dict[str, str]:
    return {"PEER_MODEL": model, "KBUILD_EXAMPLES": str(EXAMPLES), "PYTHONPATH": str(PEERS_DIR)}


def start_kbuild(model: str, artifact: Path, env: dict[str, str], *options: str) -> Running:
    """The artifact serving on a free port; `options` for `serve` besides it."""
    port = free_port()
    name = {"tabular": "iris", "text": "topics", "cnn": "shapes"}[model]
    return start_server(
        "kbuild",
        [sys.executable, str(artifact), "serve", "--http-port", str(port), *options],
        f"http://127.0.0.1:{port}/v2/health/ready",
        f"http://127.0.0.1:{port}/v2/models/{name}/infer",
        oip_body(model),
        env,
        cwd=REPO,
    )


def start_fastapi(model: str) -> Running:
    port = free_port()
    return start_server(
        "FastAPI + uvicorn",
        [_python("fastapi"), "fastapi_server.py", str(port)],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/predict",
        own_body(model),
        _peer_env(model),
    )


def start_litserve(model: str) -> Running:
    port = free_port()
    return start_server(
        "LitServe",
        [_python("litserve"), "litserve_server.py", str(port)],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/predict",
        own_body(model),
        _peer_env(model),
    )


def start_bentoml(model: str) -> Running:
    port = free_port()
    bentoml = str(venv_of("bentoml") / "bin" / "bentoml")
    return start_server(
        "BentoML",
        [bentoml, "serve", "bento_service:Peer", "--port", str(port), "--host", "127.0.0.1"],
        f"http://127.0.0.1:{port}/readyz",
        f"http://127.0.0.1:{port}/predict",
        own_body(model),
        {**_peer_env(model), "BENTOML_DO_NOT_TRACK": "True"},
    )


def start_kserve(model: str) -> Running:
    http, grpc = free_port(), free_port()
    return start_server(
        "KServe",
        [_python("kserve"), "kserve_server.py", str(http), str(grpc)],
        f"http://127.0.0.1:{http}/v2/models/peer/ready",
        f"http://127.0.0.1:{http}/v2/models/peer/infer",
        oip_body(model),
        _peer_env(model),
    )


def start_pytriton(model: str) -> Running:
    http, grpc, metrics = free_port(), free_port(), free_port()
    running = start_server(
        "Triton (PyTriton)",
        [_python("pytriton"), "pytriton_server.py", str(http), str(grpc), str(metrics)],
        f"http://127.0.0.1:{http}/v2/models/peer/ready",
        f"http://127.0.0.1:{http}/v2/models/peer/infer",
        oip_body(model, batch_dim=True),
        _peer_env(model),
    )
    # Stopped for a minute, its Python model proxy misses Triton's heartbeats
    # and the server stops answering; idle, it takes no CPU (0.4% measured).
    running.pausable = False
    return running


def start_mlserver(model: str, work: Path) -> Running:
    """MLServer's own scikit-learn runtime with adaptive batching (it has no
    runtime for the ONNX pipelines)."""
    assert model == "tabular"
    folder = work / "mlserver"
    folder.mkdir(exist_ok=True)
    (folder / "iris.joblib").write_bytes(MODEL.read_bytes())
    http, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": 32,
                "max_batch_time": 0.002,  # adaptive batching, kbuild's bounds
                "parameters": {"uri": "./iris.joblib", "version": "1"},
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 1, "debug": False}
        )
    )
    return start_server(
        "MLServer 1.7.1",
        [str(venv_of("mlserver") / "bin" / "mlserver"), "start", "."],
        f"http://127.0.0.1:{http}/v2/models/iris/ready",
        f"http://127.0.0.1:{http}/v2/models/iris/infer",
        oip_body(model),
        cwd=folder,
    )


PEER_STARTS: dict[str, Callable[[str], Running]] = {
    "pytriton": start_pytriton,
    "fastapi": start_fastapi,
    "litserve": start_litserve,
    "kserve": start_kserve,
    "bentoml": start_bentoml,
}
