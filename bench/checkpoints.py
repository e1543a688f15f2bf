"""Checkpoints converted against native: for each checkpoint step type's
example (keras, tensorflow, torch, huggingface), the zipapp built with
`runtime: onnx` (pipeline.yaml) and with `runtime: native` (native.yaml):
build time with an empty cache and again with it filled, artifact size, and
requests/s, p50 and RSS serving the example's sample on POST /predict.

    python bench/checkpoints.py             # prints the Markdown section
    python bench/checkpoints.py --write     # and puts it into BENCHMARKS.md

Cold builds each get a cache of their own (KBUILD_CACHE_DIR, fresh), so they
resolve and fetch every wheel and make the build-side environment; the cached
build is the same build again. The two servers of an example run side by side
and take turns within each round (the one not measured is stopped, SIGSTOP);
wrk drives each at 1 and 32 connections.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    WORK,
    free_port,
    human_bytes,
    machine,
    median,
    need,
    post_script,
    table,
    turns_options,
    wait_http,
)
from serving_servers import wrk  # noqa: E402

EXAMPLES = ("keras", "tensorflow", "torch", "huggingface")
RUNTIMES = {"onnx": "pipeline.yaml", "native": "native.yaml"}
CONNECTIONS = (1, 32)


def build(pipeline: Path, out: Path, cache: Path) -> tuple[float, Path]:
    env = {**os.environ, "KBUILD_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild", "--spin", "cpu-linux-x86_64", "-o", str(out), str(pipeline)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"kbuild {pipeline} failed:\n{proc.stderr}")
    return time.perf_counter() - start, Path(proc.stdout.strip().splitlines()[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = turns_options(__doc__ or "", seconds=5, rounds=3)
    args = parser.parse_args()
    need("wrk")
    work = WORK / "checkpoints"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []
    for example in EXAMPLES:
        artifacts: dict[str, Path] = {}
        timings: dict[str, tuple[float, float]] = {}
        for runtime, name in RUNTIMES.items():
            pipeline = REPO / "examples" / example / name
            with tempfile.TemporaryDirectory(prefix="kbuild-cold-", dir=work) as cache:
                cold, artifact = build(pipeline, work / f"{example}-{runtime}-cold", Path(cache))
                cached, artifact = build(pipeline, work / f"{example}-{runtime}", Path(cache))
            artifacts[runtime] = artifact
            timings[runtime] = (cold, cached)
        sample = yaml.safe_load((REPO / "examples" / example / "pipeline.yaml").read_text())["samples"][0]["inputs"]
        script = post_script(work / f"{example}.lua", json.dumps(sample))
        serve = yaml.safe_load((REPO / "examples" / example / "pipeline.yaml").read_text())["serve"]
        servers = {}
        for runtime, artifact in artifacts.items():
            port = free_port()
            # both servers of an example run at once: each on ports of its own
            grpc = ["--grpc-port", str(free_port())] if "grpc" in serve else []
            log = work / f"{example}-{runtime}.log"
            with log.open("wb") as handle:
                proc = subprocess.Popen(
                    [sys.executable, str(artifact), "serve", "--http-port", str(port), *grpc],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            try:
                wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout=300)
            except RuntimeError as e:
                raise SystemExit(f"{artifact.name}: {e}\n{log.read_text()[-2000:]}") from None
            servers[runtime] = (proc, f"http://127.0.0.1:{port}/predict")
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        try:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGSTOP)
            for proc, url in servers.values():  # warm-up
                proc.send_signal(signal.SIGCONT)
                wrk(url, 8, 2, script)
                proc.send_signal(signal.SIGSTOP)
            for _ in range(args.rounds):
                for connections in CONNECTIONS:
                    for runtime, (proc, url) in servers.items():
                        proc.send_signal(signal.SIGCONT)
                        results.setdefault((runtime, connections), []).append(
                            wrk(url, connections, args.seconds, script)
                        )
                        proc.send_signal(signal.SIGSTOP)
            rss = {runtime: rss_mib(proc.pid) for runtime, (proc, _) in servers.items()}
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                proc.wait(30)
        for runtime in RUNTIMES:
            cold, cached = timings[runtime]
            cells = [
                f"examples/{example}",
                runtime,
                f"{cold:.1f} s",
                f"{cached:.1f} s",
                human_bytes(artifacts[runtime].stat().st_size),
                f"{rss[runtime]:.0f} MiB",
            ]
            for connections in CONNECTIONS:
                measured = results[(runtime, connections)]
                cells.append(f"{median([m[0] for m in measured]):.0f}")
                cells.append(f"{median([m[1] for m in measured]):.2f} ms")
            rows.append(cells)
    headers = [
        "pipeline",
        "runtime",
        "build, cold",
        "build, cached",
        "artifact",
        "RSS after",
        "req/s, 1 conn",
        "p50, 1 conn",
        "req/s, 32 conn",
        "p50, 32 conn",
    ]
    section = (
        "## Checkpoints: converted against native\n\n"
        f"{machine()}.\n\n"
        "Each checkpoint step type's example built as a zipapp for `cpu-linux-x86_64` with `runtime: onnx` "
        "(the default: converted at build time, onnxruntime in the artifact) and `runtime: native` (the framework "
        "in the artifact). Cold: a cache of its own, empty (every wheel resolved and fetched from the index, the "
        "build-side environment made); cached: the same build again. Served: the example's sample on POST /predict, "
        f"wrk for {args.seconds} s per turn, {args.rounds} rounds, the two servers of an example taking turns "
        "(medians). RSS: the server's resident memory after its last turn. "
        "Command: `python bench/checkpoints.py --write`.\n\n" + table(headers, rows)
    )
    print(section)
    if args.write:
        from common import write_section

        write_section("Checkpoints: converted against native", section)


if __name__ == "__main__":
    main()
