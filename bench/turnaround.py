"""Where the text model's throughput goes at 32 connections: the artifact of
examples/text served over HTTP beside its own Pipeline.run in-process, with
batches of 32 rows (the default) and of 16.

    python bench/turnaround.py                # prints the Markdown section
    python bench/turnaround.py --write        # and puts it into BENCHMARKS.md

Both artifacts run side by side and take turns within each round (the one
not measured is stopped, SIGSTOP, and both are while the in-process calls
are timed). For each turn, wrk (1 thread, 32 connections) drives one of them
and the report takes from the server's own /metrics, before and after:

- how busy the pipeline was: the sum of its calls' durations over the wall
  time (kbuild_pipeline_duration_seconds_sum);
- its mean call, against the same call in-process at the same batch size;
- the CPU (share of one core) of the event loop's thread, of the model's
  threads (the pipeline thread, onnxruntime's and the tokenizer's pools) and
  of wrk.

With 32 closed-loop clients and batches of 32, every client is in the batch
that runs: the next batch cannot form until the loop has written the 32
answers and read 32 new requests, and the model waits for that. With
batches of 16, one batch forms while the other runs, and the loop's work
runs beside the model's on the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, machine, median, need, post_script, table, turns_options, write_section  # noqa: E402
from peer_servers import EXAMPLES, ROWS, Running, start_kbuild  # noqa: E402
from serving_servers import LOAD_PIPELINE, TimedProcess, compile_pipeline, wrk_counting  # noqa: E402

SIZES = (32, 16)

TIMING = (
    LOAD_PIPELINE
    + """
row, sizes = json.loads(sys.argv[2]), json.loads(sys.argv[3])
batches = {n: {"text": np.array([row] * n, dtype=object)} for n in sizes}
for batch in batches.values():
    for _ in range(10):
        pipeline.run(batch)
for _ in sys.stdin:
    out = {}
    for n, batch in batches.items():
        t = time.perf_counter(); calls = 0
        while time.perf_counter() - t < 2.0:
            pipeline.run(batch); calls += 1
        wall = time.perf_counter() - t
        out[f"rows_per_s_{n}"], out[f"call_ms_{n}"] = calls * n / wall, wall / calls * 1e3
    print(json.dumps(out), flush=True)
"""
)

_SAMPLE = re.compile(
    r"^(kbuild_pipeline_duration_seconds_sum|kbuild_batch_rows_sum|"
    r"kbuild_pipeline_duration_seconds_count) (\S+)$",
    re.M,
)


def build(size: int, work: Path) -> Path:
    """The text example's artifact with batches of at most `size` rows."""
    folder = work / f"text-{size}"
    shutil.copytree(EXAMPLES / "text", folder)
    spec = folder / "pipeline.yaml"
    text = spec.read_text()
    if size != 32:  # 32 is the default
        text = text.replace("serve:\n", f"serve:\n  batching: {{max_batch_size: {size}}}\n", 1)
    spec.write_text(text)
    return compile_pipeline(folder)


def scrape(server: Running) -> dict[str, float]:
    base = server.url.split("/v2/")[0]
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
        return {name: float(value) for name, value in _SAMPLE.findall(reply.read().decode())}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each of the process's threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def turn(server: Running, seconds: int) -> dict[str, float]:
    """One measured run of wrk against `server`, and what it cost where."""
    assert server.script is not None
    pid = server.procs[0].pid
    before, cpu0, child0, t0 = (
        scrape(server),
        thread_cpu(pid),
        resource.getrusage(resource.RUSAGE_CHILDREN),
        time.time(),
    )
    rps, _, _, failed = wrk_counting(server.url, 32, seconds, server.script)
    wall = time.time() - t0
    after, cpu1, child1 = scrape(server), thread_cpu(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    if failed:
        raise SystemExit(f"wrk saw {failed} failed requests")
    spent = {tid: cpu1[tid] - cpu0.get(tid, 0.0) for tid in cpu1}
    calls = after["kbuild_pipeline_duration_seconds_count"] - before["kbuild_pipeline_duration_seconds_count"]
    busy = after["kbuild_pipeline_duration_seconds_sum"] - before["kbuild_pipeline_duration_seconds_sum"]
    return {
        "rps": rps,
        "busy": busy / wall,
        "call_ms": busy / calls * 1e3,
        "rows": (after["kbuild_batch_rows_sum"] - before["kbuild_batch_rows_sum"]) / calls,
        "loop_cpu": spent.get(pid, 0.0) / wall,
        "model_cpu": sum(v for tid, v in spent.items() if tid != pid) / wall,
        "wrk_cpu": (child1.ru_utime + child1.ru_stime - child0.ru_utime - child0.ru_stime) / wall,
    }


def main() -> None:
    args = turns_options(__doc__, seconds=8, rounds=3).parse_args()
    need("wrk")
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-turnaround-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    servers: dict[int, Running] = {}
    results: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    timing: TimedProcess | None = None
    try:
        for size in SIZES:
            servers[size] = start_kbuild("text", build(size, work), env, "--grpc-port", str(free_port()))
            script = post_script(work / f"text-{size}.lua", servers[size].body)
            servers[size].script = script
            wrk_counting(servers[size].url, 32, 2, script)  # warm-up
        # Each artifact unpacked its app; either serves the in-process calls (the batch size is theirs).
        root = min(p for p in (work / "apps").iterdir() if (p / "app" / "pipeline.json").is_file())
        for server in servers.values():
            server.pause()
        timing = TimedProcess(root, env, TIMING, json.dumps(ROWS["text"][0]), json.dumps(SIZES))
        for round_ in range(args.rounds):
            calls = timing.measure()
            for size in SIZES if round_ % 2 == 0 else SIZES[::-1]:
                servers[size].resume()
                result = turn(servers[size], args.seconds)
                servers[size].pause()
                result.update(inproc_rps=calls[f"rows_per_s_{size}"], inproc_call_ms=calls[f"call_ms_{size}"])
                results[size].append(result)
                print(
                    f"round {round_ + 1}, batches of {size}: {result['rps']:,.0f} req/s, in-process "
                    f"{result['inproc_rps']:,.0f} rows/s, busy {result['busy']:.0%}",
                    file=sys.stderr,
                )
    finally:
        if timing is not None:
            timing.close()
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(section := report(results, args))
    if args.write:
        write_section("Text at 32 connections", section)


def report(results: dict[int, list[dict[str, float]]], args: argparse.Namespace) -> str:
    rows = []
    for size, runs in results.items():
        for i, r in enumerate(runs):
            rows.append(
                [
                    f"{size}",
                    str(i + 1),
                    f"{r['rps']:,.0f}",
                    f"{r['inproc_rps']:,.0f}",
                    f"{r['rps'] / r['inproc_rps']:.0%}",
                    f"{r['rows']:.1f}",
                    f"{r['busy']:.0%}",
                    f"{r['call_ms']:.2f}",
                    f"{r['inproc_call_ms']:.2f}",
                    f"{r['loop_cpu']:.0%}",
                    f"{r['model_cpu']:.0%}",
                    f"{r['wrk_cpu']:.0%}",
                ]
            )
    ratios = {size: median([r["rps"] / r["inproc_rps"] for r in runs]) for size, runs in results.items()}
    return (
        "\n".join(
            [
                "## Text at 32 connections",
                "",
                f"`python bench/turnaround.py --write` (this run: `--seconds {args.seconds} --rounds {args.rounds}`) on "
                f"{machine()}. The text example over HTTP (wrk, 1 thread, 32 connections) against its own "
                "Pipeline.run in-process at the same batch size; the pipeline's busy share and mean call from the "
                "server's /metrics; CPU as a share of one core (two cores in all).",
                "",
                table(
                    [
                        "batch",
                        "round",
                        "req/s",
                        "in-process rows/s",
                        "of in-process",
                        "rows a call",
                        "pipeline busy",
                        "call ms",
                        "in-process call ms",
                        "loop thread CPU",
                        "model threads CPU",
                        "wrk CPU",
                    ],
                    rows,
                ),
                "Median share of in-process throughput: "
                + ", ".join(f"batches of {s}: {v:.0%}" for s, v in ratios.items())
                + ".",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
