"""What the HTTP server itself spends on one request, without sockets or a
client: the scikit-learn iris artifact's own runtime serves Open Inference
Protocol requests through its real connection, routing, batching and reply
code, over fake transports that hand each answer straight back as the
connection's next request (the way the server's tests drive it).

    python bench/request_cost.py                       # this checkout
    python bench/request_cost.py --against REV         # and a git revision, in turns
    python bench/request_cost.py --write               # and puts it into BENCHMARKS.md

CPU time per request (process time, so the machine's other load counts less
than in a wall-clock measure) at 32 connections (the requests of a round are
batched, the model's call shared) and at 1. Each run answers 20,000 requests
(2,000 at 1 connection, where the model's own call is most of the cost); the
table keeps the lowest and the median of the runs. The Python bytecodes the
event loop's thread runs per request are counted too (sys.settrace): a
measure the machine's noise does not move. With --against, the
revision's kbuild runtime (a git worktree) serves the same artifact in turns
with this checkout's, round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, machine, median, table, write_section  # noqa: E402
from serving_servers import build  # noqa: E402

HARNESS = """
import asyncio, gc, json, sys, time
from pathlib import Path
tree, site, app, connections, runs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path[:0] = [tree, site]
from kbuild.runtime.inference import Service
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.transports.http import HttpEndpoint, _Connection
spec = PipelineSpec.read(app)
service = Service(spec, PipelineRunner.load(app, spec))
body = json.dumps({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                               "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
REQUEST = (b"POST /v2/models/iris/infer HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\n"
           b"Content-Length: %d\\r\\nContent-Type: application/json\\r\\n\\r\\n" % len(body) + body)

class Transport(asyncio.Transport):
    def __init__(self, loop, count):
        super().__init__()
        self.loop, self.count, self.conn = loop, count, None
    def write(self, data):
        count = self.count
        count[0] += 1
        if count[0] < count[1]:
            self.loop.call_soon(self.conn.data_received, REQUEST)
        elif count[0] == count[1]:
            count[2].set_result(None)
    def is_closing(self):
        return False
    def close(self):
        pass
    def get_extra_info(self, name, default=None):
        return default

async def serve(n):
    loop = asyncio.get_running_loop()
    endpoint = HttpEndpoint(service, spec.serve.http)
    count = [0, n, loop.create_future()]
    conns = []
    for _ in range(connections):
        conn = _Connection(endpoint)
        transport = Transport(loop, count)
        transport.conn = conn
        conn.connection_made(transport)
        conns.append(conn)
    t = time.process_time()
    for conn in conns:
        conn.data_received(REQUEST)
    await count[2]
    spent = time.process_time() - t
    for conn in conns:
        conn.connection_lost(None)
    return spent / n * 1e6

ops = [0]

def trace(frame, event, arg):
    frame.f_trace_opcodes = True
    return count_opcode

def count_opcode(frame, event, arg):
    if event == "opcode":
        ops[0] += 1
    return count_opcode

async def main():
    await serve(1000)
    if runs == 0:  # count the loop thread's bytecodes instead of timing
        sys.settrace(trace)
        await serve(1000)
        sys.settrace(None)
        print(json.dumps([ops[0] / 1000]))
    else:
        n = 20000 if connections > 1 else 2000
        print(json.dumps([await serve(n) for _ in range(runs)]))
    service.close()

gc.collect()
gc.freeze()
asyncio.run(main())
"""


def unpack(pyz: Path, cache: Path) -> tuple[Path, Path]:
    """Run the artifact once, so that it unpacks; its (site, app) folders."""
    request = json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]]})
    env = {**os.environ, "KBUILD_APP_CACHE": str(cache)}
    subprocess.run(
        [sys.executable, str(pyz), "predict"], input=request, text=True, env=env, check=True, capture_output=True
    )
    [root] = [p for p in cache.iterdir() if (p / "app" / "pipeline.json").is_file()]
    return root / "site", root / "app"


def cost(tree: Path, site: Path, app: Path, connections: int, runs: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", HARNESS, str(tree), str(site), str(app), str(connections), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    values: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="a git revision whose runtime serves too, in turns")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns (default 3)")
    parser.add_argument("--runs", type=int, default=5, help="runs of 20,000 requests a round (default 5)")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-cost-"))
    trees = {"this checkout": REPO}
    try:
        if args.against:
            other = work / "against"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(other), args.against],
                check=True,
                capture_output=True,
            )
            trees[args.against] = other
        site, app = unpack(build(work, batching=True), work / "apps")
        results: dict[tuple[str, int], list[float]] = {}
        opcodes = {name: cost(tree, site, app, 32, 0)[0] for name, tree in trees.items()}
        ratios: dict[int, list[float]] = {}  # connections -> this checkout's median over the other's, per round
        for round_ in range(args.rounds):
            for connections in (32, 1):
                medians = []
                for name, tree in trees.items():
                    values = cost(tree, site, app, connections, args.runs)
                    results.setdefault((name, connections), []).extend(values)
                    medians.append(median(values))
                    print(
                        f"round {round_ + 1}, {connections:2d} connections, {name}: "
                        f"{min(values):.1f} us lowest, {median(values):.1f} us median",
                        file=sys.stderr,
                    )
                if len(medians) == 2:
                    ratios.setdefault(connections, []).append(medians[0] / medians[1])
    finally:
        if args.against:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "against")],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        [name, connections, f"{min(v):.1f}", f"{median(v):.1f}"]
        for (name, connections), v in sorted(results.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
    ]
    command = "python bench/request_cost.py --write" + (f" --against {args.against}" if args.against else "")
    section = (
        f"## Request cost\n\n`{command}` (this run: `--rounds {args.rounds} --runs {args.runs}`) on {machine()}. "
        "CPU microseconds per request of the scikit-learn iris artifact's runtime serving OIP requests "
        "in-process through its real HTTP connection code over fake transports (no sockets, no client); "
        "at 32 connections each call of the model serves 32 requests.\n\n"
        + table(["runtime", "connections", "µs/request, lowest", "µs/request, median"], rows)
        + "\n"
    )
    section += (
        "\nPython bytecodes run on the event loop's thread per request at 32 connections (a count, not a time; "
        "traced, the model's calls are slow enough to go to the pipeline thread, which is not counted): "
        + ", ".join(f"{name} {n:,.0f}" for name, n in opcodes.items())
        + ".\n"
    )
    for connections, values in sorted(ratios.items(), reverse=True):
        per_round = ", ".join(f"{r:.2f}" for r in values)
        section += (
            f"\n- this checkout's median over {args.against}'s at {connections} connection(s), per round: {per_round}"
        )
    section += "\n" if ratios else ""
    print(section)
    if args.write:
        write_section("Request cost", section)


if __name__ == "__main__":
    main()
