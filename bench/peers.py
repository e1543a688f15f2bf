"""kbuild beside the servers users pick instead, on three models: the iris
scikit-learn estimator (tabular), the text example (tokenizer + 4-layer
transformer in ONNX) and the CNN example (image decoding + a 2.4M-parameter
ResNet-style network in ONNX).

    python bench/peer_envs.py                    # the peers' environments, once (a few minutes)
    python bench/peers.py                        # prints the Markdown section
    python bench/peers.py --write                # and puts it into BENCHMARKS.md

The peers: Triton through PyTriton 0.7.0 (dynamic batching), a hand-written
FastAPI 0.165 endpoint on uvicorn 0.54 with uvloop and httptools (one worker
per core), LitServe 0.2.19 (batching), KServe 0.21.0's Python model server
(OIP v2), BentoML 1.4.40 (adaptive batching, one worker per core) and, on
the tabular model, MLServer 1.7.1's scikit-learn runtime. Each runs from its
own environment with the same model code (bench/peers/handlers.py), and is
checked to give the right answer before it is measured. kbuild runs the
artifacts it builds from the same model files. Every request is one row: OIP
JSON for kbuild, Triton, KServe and MLServer, the server's own JSON for the
others. wrk (1 thread) drives each at 1 and 32 connections; the servers of a
model run side by side and take turns within each round, the order rotating
from round to round; ratios are per round. The servers not being measured are
stopped (SIGSTOP) meanwhile, and so are all of them while the in-process calls
are timed: LitServe's idle workers poll, taking a fifth of a core from whoever
is measured. PyTriton is not stopped (its model proxy would lose Triton's
heartbeats); idle, it takes no CPU. Failed requests (a server shedding load) are counted, not fatal.

For kbuild on the text and CNN models, the same round also times the
artifact's Pipeline.run in-process, in its own environment, right before
kbuild's own turn: one row (p50) before its turn at 1 connection, batches of
32 rows (rows/s) before its turn at 32, to see what serving costs on models
whose call is milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, need, post_script, turns_options, write_section  # noqa: E402
from peer_envs import PEERS, ensure, size_mib  # noqa: E402
from peer_report import report  # noqa: E402
from peer_servers import EXAMPLES, PEER_STARTS, ROWS, Running, right_answer, start_kbuild, start_mlserver  # noqa: E402
from serving_servers import LOAD_PIPELINE, TimedProcess, build, compile_pipeline  # noqa: E402
from serving_servers import wrk_counting as wrk  # noqa: E402

MODELS = ("tabular", "text", "cnn")
CONNECTIONS = (1, 32)

TIMING = (
    LOAD_PIPELINE
    + """
name, row = sys.argv[2], json.loads(sys.argv[3])
one = {name: np.array([row], dtype=object)}
many = {name: np.array([row] * 32, dtype=object)}
for _ in range(20):
    pipeline.run(many)
for line in sys.stdin:  # "1": one row's p50; "32": rows/s in batches of 32
    if line.strip() == "1":
        times = []
        for _ in range(300):
            t = time.perf_counter(); pipeline.run(one); times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({"p50_ms": times[len(times) // 2] * 1e3}), flush=True)
    else:
        t = time.perf_counter(); n = 0
        while time.perf_counter() - t < 2.0:
            pipeline.run(many); n += 32
        print(json.dumps({"rows_per_s": n / (time.perf_counter() - t)}), flush=True)
"""
)


class InProcess(TimedProcess):
    """The artifact's Pipeline.run, timed on demand in its own environment."""

    def __init__(self, apps: Path, model: str, env: dict[str, str]) -> None:
        [root] = [p for p in apps.iterdir() if (p / "app" / "pipeline.json").is_file()]
        field = {"text": "text", "cnn": "image"}[model]
        super().__init__(root, env, TIMING, field, json.dumps(ROWS[model][0]))


def artifact(model: str, work: Path) -> Path:
    if model == "tabular":
        return build(work, batching=True)
    folder = work / model
    shutil.copytree(EXAMPLES / ("text" if model == "text" else "image-cnn"), folder)
    return compile_pipeline(folder)


def check(server: Running, model: str) -> None:
    request = urllib.request.Request(
        server.url, data=server.body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        answer = json.loads(reply.read())
    if not right_answer(model, answer):
        raise SystemExit(f"{server.name} answers the {model} row wrongly: {answer}")


def measure_model(model: str, work: Path, args: argparse.Namespace) -> tuple[list[Running], list[dict[str, float]]]:
    """The servers with their results, and for the text and CNN models each
    round's in-process calls (one row's p50, rows/s in batches of 32), each
    timed right before kbuild's turn at that connection count."""
    apps = work / f"apps-{model}"
    env = {**os.environ, "KBUILD_APP_CACHE": str(apps)}
    pyz = artifact(model, work / f"build-{model}")
    servers: list[Running] = []
    timing: InProcess | None = None
    paired: list[dict[str, float]] = []
    try:
        kb = start_kbuild(model, pyz, env)
        kb.size_mib = (pyz.stat().st_size + sum(p.stat().st_size for p in apps.rglob("*") if p.is_file())) / 2**20
        servers.append(kb)
        for peer in args.peers:
            if peer == "mlserver":
                if model == "tabular":
                    servers.append(start_mlserver(model, work))
                    servers[-1].size_mib = size_mib(ensure("mlserver"))
                continue
            servers.append(PEER_STARTS[peer](model))
            servers[-1].size_mib = size_mib(ensure(peer))
        for server in servers:
            check(server, model)
            lua = post_script(work / f"{model}-{len(servers)}-{servers.index(server)}.lua", server.body)
            server.script = lua
            wrk(server.url, 8, 2, lua)  # warm-up: pools, caches, the models' first calls
        if model != "tabular":
            timing = InProcess(apps, model, env)
        for server in servers:
            server.pause()
        for round_ in range(args.rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            calls: dict[str, float] = {}
            for connections in CONNECTIONS:
                for server in order:
                    assert server.script is not None
                    if server is kb and timing is not None:
                        # In the same minute as kbuild's own turn: the machine's
                        # speed drifts more between a round's ends than the targets allow.
                        calls.update(timing.measure(str(connections)))
                        print(f"{model} round {round_ + 1}: Pipeline.run in-process {calls}", file=sys.stderr)
                    server.resume()
                    wrk(server.url, connections, 1, server.script)
                    result = wrk(server.url, connections, args.seconds, server.script)
                    server.pause()
                    server.results.setdefault(connections, []).append(result)
                    print(
                        f"{model} round {round_ + 1}, {connections:2d} connections, {server.name}: "
                        f"{result[0]:.0f} req/s, p50 {result[1]:.2f} ms, p99 {result[2]:.2f} ms, "
                        f"{result[3]} failed",
                        file=sys.stderr,
                    )
            if calls:
                paired.append(calls)
        for server in servers:
            server.resume()
            server.read_peak_rss()
    finally:
        if timing is not None:
            timing.close()
        for server in servers:
            server.stop()
    return servers, paired


def main() -> None:
    parser = turns_options(__doc__, seconds=5, rounds=3)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=list(PEERS))
    args = parser.parse_args()
    need("wrk")
    for peer in args.peers:
        ensure(peer)
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-peers-"))
    measured = {}
    try:
        for model in args.models:
            measured[model] = measure_model(model, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = report(measured, args, median)
    print(section)
    if args.write:
        write_section("Peers", section)


if __name__ == "__main__":
    main()
