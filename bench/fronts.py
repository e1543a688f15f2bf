"""Serving fronts side by side: kbuild's own HTTP server against the same
runtime behind a native server and in several processes, with Triton
(PyTriton) and FastAPI + uvicorn as the yardsticks, on the held-out
scikit-learn iris model of bench/peers.py.

    python bench/peer_envs.py fastapi pytriton   # the peers' environments, once
    python bench/fronts.py                       # prints the Markdown section
    python bench/fronts.py --write               # and puts it into BENCHMARKS.md

The fronts:
- kbuild: the artifact as it serves (its hand-written HTTP/1.1 server on
  one asyncio loop, the batcher and its pipeline thread);
- granian, RSGI: granian 2.8.9 (Rust, on hyper) in front of the artifact's
  own Service, batcher and OIP decode and encode (bench/peers/kbuild_rsgi.py),
  one worker, with one and two Rust threads;
- two processes: two artifacts on one port (SO_REUSEPORT,
  bench/peers/reuse_port.py), each with its own loop and batcher.
Each is checked to give the right answer before it is measured. wrk (1
thread) drives each at 1 and 32 connections; the servers take turns within
each round, the order rotating; the ones not measured are stopped (SIGSTOP),
but for PyTriton (see bench/peers.py). Ratios are per round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, machine, median, need, post_script, table, turns_options, write_section  # noqa: E402
from peer_envs import ensure  # noqa: E402
from peer_servers import PEER_STARTS, PEERS_DIR, Running, oip_body, start_kbuild, start_server  # noqa: E402
from peers import check  # noqa: E402
from serving_servers import build, cache_root  # noqa: E402
from serving_servers import wrk_counting as wrk  # noqa: E402

GRANIAN = "granian==2.8.9"
CONNECTIONS = (1, 32)
YARDSTICKS = ("pytriton", "fastapi")


def granian_dir() -> Path:
    target = cache_root() / "granian"
    if not (target / "granian").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), GRANIAN], check=True)
    return target


def _app_root(cache: Path) -> Path:
    [root] = [p for p in cache.iterdir() if (p / "app" / "pipeline.json").is_file()]
    return root


def start_granian(name: str, root: Path, threads: int) -> Running:
    port = free_port()
    env = {
        "KBUILD_APP": str(root / "app"),
        "PYTHONPATH": os.pathsep.join([str(PEERS_DIR), str(granian_dir()), str(root / "site")]),
    }
    command = [sys.executable, "-m", "granian", "--interface", "rsgi", "--port", str(port), "--workers", "1"]
    command += ["--runtime-threads", str(threads), "--loop", "asyncio", "--no-ws", "--log-level", "warning"]
    return start_server(
        name,
        [*command, "kbuild_rsgi:app"],
        f"http://127.0.0.1:{port}/v2/health/ready",
        f"http://127.0.0.1:{port}/v2/models/iris/infer",
        oip_body("tabular"),
        env,
    )


def start_processes(artifact: Path, env: dict[str, str], count: int) -> Running:
    port = free_port()
    one = f"{sys.executable} {PEERS_DIR / 'reuse_port.py'} {artifact} serve --http-port {port}"
    return start_server(
        f"kbuild, {count} processes (SO_REUSEPORT)",
        ["sh", "-c", " & ".join([one] * count) + " & wait"],
        f"http://127.0.0.1:{port}/v2/health/ready",
        f"http://127.0.0.1:{port}/v2/models/iris/infer",
        oip_body("tabular"),
        env,
        cwd=REPO,
    )


def main() -> None:
    args = turns_options(__doc__, seconds=5, rounds=3).parse_args()
    need("wrk")
    for peer in YARDSTICKS:
        ensure(peer)
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-fronts-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    servers: list[Running] = []
    try:
        artifact = build(work / "build", batching=True)
        start_kbuild("tabular", artifact, env).stop()  # unpacked once: every "ready" below is a cached start
        servers.append(start_kbuild("tabular", artifact, env))
        root = _app_root(work / "apps")
        servers.append(start_granian("granian, RSGI, 1 Rust thread", root, 1))
        servers.append(start_granian("granian, RSGI, 2 Rust threads", root, 2))
        servers.append(start_processes(artifact, env, 2))
        for peer in YARDSTICKS:
            servers.append(PEER_STARTS[peer]("tabular"))
        for server in servers:
            check(server, "tabular")
            server.script = post_script(work / f"front-{servers.index(server)}.lua", server.body)
            wrk(server.url, 8, 2, server.script)
            server.pause()
        for round_ in range(args.rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for server in order:
                server.resume()
                for connections in CONNECTIONS:
                    assert server.script is not None
                    result = wrk(server.url, connections, args.seconds, server.script)
                    server.results.setdefault(connections, []).append(result)
                server.read_peak_rss()
                server.pause()
            print(
                f"round {round_ + 1}: " + ", ".join(f"{s.name} {s.results[32][-1][0]:,.0f}/s" for s in servers),
                file=sys.stderr,
            )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(section := report(servers, args))
    if args.write:
        write_section("Serving fronts", section)


def report(servers: list[Running], args: argparse.Namespace) -> str:
    kb = servers[0]
    rows = []
    for s in servers:
        one, many = s.results[1], s.results[32]
        rows.append(
            [
                s.name,
                f"{median([r[0] for r in one]):,.0f}",
                f"{median([r[1] for r in one]):.2f}",
                f"{median([r[0] for r in many]):,.0f}",
                f"{median([r[1] for r in many]):.2f}",
                f"{median([r[2] for r in many]):.2f}",
                " / ".join(f"{r[0] / k[0]:.2f}" for r, k in zip(many, kb.results[32], strict=True)),
                f"{s.ready_s:.2f}",
                f"{s.peak_rss_mib:.0f}",
                str(sum(r[3] for r in one + many)),
            ]
        )
    yardsticks = servers[-len(YARDSTICKS) :]
    lines = []
    for s in servers[: -len(YARDSTICKS)]:
        for y in yardsticks:
            ratios = [r[0] / p[0] for r, p in zip(s.results[32], y.results[32], strict=True)]
            p50s = [r[1] / p[1] for r, p in zip(s.results[1], y.results[1], strict=True)]
            lines.append(
                f"- {s.name} over {y.name}: 32 connections "
                + ", ".join(f"{x:.1f}×" for x in ratios)
                + "; p50 at 1 connection "
                + ", ".join(f"{x:.2f}" for x in p50s)
                + " of its"
            )
    headers = ["front", "req/s, 1 conn", "p50 ms", "req/s, 32 conns", "p50 ms", "p99 ms", "of kbuild's, per round"]
    return "\n".join(
        [
            "## Serving fronts",
            "",
            f"`python bench/fronts.py --write` (this run: `--seconds {args.seconds} --rounds {args.rounds}`) on "
            f"{machine()}. The iris scikit-learn artifact behind each front; medians over the rounds; "
            "ready: from start to the first ready answer, the artifact already unpacked.",
            "",
            table([*headers, "ready s", "peak RSS MiB", "failed"], rows),
            "",
            "Per round:",
            "",
            *lines,
            "",
        ]
    )


if __name__ == "__main__":
    main()
