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

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import need, post_script, turns_options, write_section  # noqa: E402
from serving_report import CONNECTIONS, report  # noqa: E402
from serving_servers import (  # noqa: E402
    BODY,
    Server,
    Timings,
    build,
    build_onnx,
    mlserver_venv,
    start_kbuild,
    start_mlserver,
    stop_mlserver,
    uvloop_dir,
    wrk,
)


def main() -> None:
    parser = turns_options(__doc__, seconds=6, rounds=5)
    parser.add_argument("--variants", action="store_true", help="also the stacks considered")
    args = parser.parse_args()
    need("wrk")

    venv = mlserver_venv()
    uvloop = uvloop_dir() if args.variants else None
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-serving-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    script = post_script(work / "infer.lua", BODY)
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
            print(
                f"round {round_ + 1}: model call {calls['model']:.3f} ms, "
                f"ONNX Pipeline.run {onnx_calls['pipeline']:.3f} ms",
                file=sys.stderr,
            )
            # The order rotates from round to round, and each server gets a short
            # run of its own right before it is measured, so that none is always
            # the one measured after a switch.
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for connections in CONNECTIONS:
                for server in order:
                    wrk(server.url, connections, 1, script)
                    result = wrk(server.url, connections, args.seconds, script)
                    server.results.setdefault(connections, []).append(result)
                    print(
                        f"round {round_ + 1}, {connections:2d} connections, {server.name}: "
                        f"{result[0]:.0f} req/s, p50 {result[1]:.2f} ms, p99 {result[2]:.2f} ms",
                        file=sys.stderr,
                    )
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


if __name__ == "__main__":
    main()
