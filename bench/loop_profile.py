"""Where the event loop's time goes at 32 connections: the artifacts of
bench/peers.py (tabular, text, CNN) under wrk, their threads sampled by
py-spy, each sample put in the stage of the request it was in.

    python bench/loop_profile.py                 # prints the Markdown section
    python bench/loop_profile.py --write         # and puts it into BENCHMARKS.md

Two samplers run side by side on the server for the same window: one takes
every thread's stack whether it runs or not (--idle), the other only those
on a CPU. A stack counted by the first and not the second was off the CPU:
in the loop's epoll wait that is the loop idle; anywhere else it is the loop
blocked on the GIL (which the pipeline thread holds while its Python runs).
A running stack's stage is that of its innermost frame that names one (see
STAGES); socket writes and reads are the kernel's send and receive, run on
the loop's thread. Shares are of the thread's wall time in the window, and
µs a request divides that time by the requests wrk counted in it.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, need, table, turns_options, write_section  # noqa: E402
from peer_servers import Running, start_kbuild  # noqa: E402
from peers import artifact, check  # noqa: E402
from serving_servers import wrk  # noqa: E402

MODELS = ("tabular", "text", "cnn")
RATE = 100  # samples a second, each sampler
# stage -> patterns of "function (file" of a frame; the innermost frame that
# matches one decides (earlier stages first, for a frame matching two)
STAGES: dict[str, tuple[str, ...]] = {
    "write (send)": (r"Transport\.write ", r"_write_ready", r"_Connection\._write"),
    "read (recv)": (r"_read_ready__data_received ", r"_read_ready__get_buffer"),
    "encode": (r"response_text", r"encode_array", r"infer_reply", r"json_text", r"\bdumps\b", r"_Connection\._answer "),
    "JSON decode": (r"_parse_json", r"\bloads\b", r"raw_decode"),
    "tensor conversion": (r"\(kbuild/runtime/tensors\.py", r"\(kbuild/runtime/oip\.py", r"decode_inputs"),
    "HTTP parse and routing": (r"\(kbuild/runtime/transports/wire\.py", r"parse_head", r"HttpApi\.handle", r"_Connection"),
    "hand-off to the batcher": (r"\(kbuild/runtime/batching\.py", r"\(kbuild/runtime/answers\.py", r"deadlines", r"combine"),
    "metrics": (r"\(kbuild/runtime/metrics\.py",),
    "model call on the loop": (r"\(kbuild/runtime/pipeline_runner\.py", r"\(kbuild/runtime/steps/"),
    "event loop": (r"\(asyncio/", r"selectors"),
}  # fmt: skip
IDLE, GIL = "idle (waiting for requests or work)", "waiting for the GIL"


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, patterns in STAGES.items():
            if any(re.search(p, frame) for p in patterns):
                return stage
    return "other"


def _off_cpu(frames: list[str]) -> str:
    """Why a thread was off the CPU: waiting for its next request or job, or for the GIL."""
    leaf = frames[-1] if frames else ""
    waiting = "select" in leaf or "PipelineThread._main" in leaf or re.search(r"\((queue|threading)\.py", leaf)
    return IDLE if waiting else GIL


def _samples(path: Path) -> dict[tuple[str, str], int]:
    """(thread name, stack) -> samples, from py-spy's raw output."""
    counts: dict[tuple[str, str], int] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        thread, _, rest = stack.partition(";")
        counts[(re.sub(r"^thread \(\d+\): ", "", thread), rest)] += int(n)
    return counts


def profile(server: Running, seconds: int, work: Path) -> tuple[dict[str, dict[str, float]], float]:
    """Per thread, each stage's share of its wall time; and requests/s."""
    pid = server.tree()[0]
    out = {kind: work / f"{kind}.txt" for kind in ("all", "running")}
    load: list[tuple[float, float, float]] = []
    assert server.script is not None
    driver = threading.Thread(target=lambda: load.append(wrk(server.url, 32, seconds + 3, server.script)))  # type: ignore[arg-type]
    driver.start()
    time.sleep(1.5)
    samplers = [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(pid),
                "-r",
                str(RATE),
                "-d",
                str(seconds),
                "--format",
                "raw",
                "--threads",
                "-o",
                str(out[kind]),
                *(["--idle"] if kind == "all" else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for kind in out
    ]
    for sampler in samplers:
        sampler.wait()
    driver.join()
    every, running = _samples(out["all"]), _samples(out["running"])
    shares: dict[str, dict[str, float]] = {}
    for thread in sorted({t for t, _ in every}):
        total = sum(n for (t, _), n in every.items() if t == thread)
        stages: collections.Counter[str] = collections.Counter()
        for (t, stack), n in every.items():
            if t != thread:
                continue
            on_cpu = min(n, running.get((t, stack), 0))
            stages[_stage(stack.split(";"))] += on_cpu
            if n > on_cpu:
                stages[_off_cpu(stack.split(";"))] += n - on_cpu
        shares[thread] = {stage: n / total for stage, n in stages.items()}
    return shares, load[0][0]


def main() -> None:
    args = turns_options(__doc__, seconds=10, rounds=1).parse_args()
    need("wrk", "py-spy")
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-loop-"))
    results: dict[str, tuple[dict[str, dict[str, float]], float]] = {}
    try:
        for model in MODELS:
            pyz = artifact(model, work / f"build-{model}")
            server = start_kbuild(model, pyz, {"KBUILD_APP_CACHE": str(work / f"apps-{model}")})
            try:
                check(server, model)
                server.script = work / f"{model}.lua"
                server.script.write_text(
                    f'wrk.method = "POST"\nwrk.body = \'{server.body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
                )
                wrk(server.url, 32, 3, server.script)
                results[model] = profile(server, args.seconds, work)
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(section := report(results, args))
    if args.write:
        write_section("Where the loop's time goes", section)


def report(results: dict[str, tuple[dict[str, dict[str, float]], float]], args: argparse.Namespace) -> str:
    stages = [*STAGES, "other", GIL, IDLE]
    headers = ["stage"]
    for model in results:
        headers += [f"{model}: % of loop", "µs a request"]
    rows = []
    for stage in stages:
        row = [stage]
        for shares, rps in results.values():
            share = shares.get("MainThread", {}).get(stage, 0.0)
            row += [f"{share:.1%}", f"{share * 1e6 / rps:.1f}"]
        rows.append(row)
    busy = [
        f"- {model}: {rps:,.0f} requests/s; the pipeline thread on a CPU {1 - sum(v for k, v in shares.get('kbuild-pipeline', {}).items() if k in (GIL, IDLE)):.0%} "
        f"of the window, blocked on the GIL {shares.get('kbuild-pipeline', {}).get(GIL, 0.0):.0%}"
        for model, (shares, rps) in results.items()
    ]
    return "\n".join(
        [
            "## Where the loop's time goes",
            "",
            f"`python bench/loop_profile.py --write` (this run: `--seconds {args.seconds}`) on {machine()}. "
            f'The artifacts of "Peers" under wrk at 32 connections, sampled by py-spy at {RATE} Hz.',
            "",
            table(headers, rows),
            "",
            *busy,
            "",
        ]
    )


if __name__ == "__main__":
    main()
