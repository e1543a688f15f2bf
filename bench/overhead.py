"""Where a request's time goes at one connection: the ONNX iris artifact over
the wire, against its own in-process calls and against minimal servers on
the same loopback with the same client.

    python bench/overhead.py                  # prints the Markdown section
    python bench/overhead.py --write          # and puts it into BENCHMARKS.md

In each round, taking turns, wrk (1 thread, 1 connection) sends the same
Open Inference Protocol request (one row of four FP32 features) to:

- the artifact of examples/iris/pipeline.yaml (ONNX model + classify);
- a minimal asyncio server (an asyncio.Protocol that frames the request by
  its Content-Length, nothing more) that answers with the artifact's own
  decode, PipelineRunner.run and encode, in the artifact's environment: what any
  asyncio server running this pipeline with this decoding must spend;
- the same minimal server answering a fixed 200 JSON reply of the
  artifact's length: Python's floor for an HTTP exchange;
- a minimal C server (blocking accept/read/write on one connection, the same
  framing and reply), built here with gcc -O2: the floor of loopback, the
  kernel and the client.

The client and the servers are pinned to different cores (wrk to the first,
each server to the second): left to the scheduler, a client and a server
sharing a core add a context switch to every exchange in some rounds and not
in others, which moved the artifact's p50 between 0.16 and 0.29 ms from round
to round while the floors stayed put.

The artifact's in-process calls are timed in its own environment in the same
round: PipelineRunner.run on one row, and the whole decode-run-encode path of the
request (JSON parse, validation, PipelineRunner.run, the reply's JSON) in a tight
loop. The report sets the artifact's p50 over the wire beside the minimal
server's that runs the same path: the difference is what the artifact's own
HTTP parsing, routing, batcher, metrics and deadlines cost.
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

from common import free_port, machine, median, need, post_script, table, turns_options, wait_http, write_section  # noqa: E402
from serving_servers import BODY, Server, Timings, build_onnx, wrk  # noqa: E402

CLIENT_CPU, SERVER_CPU = 0, 1

REPLY = (
    b'{"model_name":"iris","model_version":"1.0.0","outputs":[{"name":"label","datatype":"BYTES","shape":[1],'
    b'"data":["setosa"]},{"name":"probability","datatype":"FP32","shape":[1],"data":[0.9768]}]}'
)

ASYNCIO_SERVER = """
import asyncio, json, sys
REPLY = %r
def answer(body):
    return REPLY
if len(sys.argv) > 2:  # an app folder: the artifact's own decode, PipelineRunner.run and encode
    from pathlib import Path
    from kbuild.runtime import oip
    from kbuild.runtime.contract.pipeline import PipelineSpec
    from kbuild.runtime.pipeline_runner import PipelineRunner
    from kbuild.runtime.transports.http_api import infer_reply
    app = Path(sys.argv[1])
    spec = PipelineSpec.read(app)
    pipeline, model = PipelineRunner.load(app, spec), oip.Model(spec)
    def answer(body):
        request = oip.read_request(model, json.loads(body))
        return infer_reply(model, request, pipeline.run(request.inputs)).body
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %%d\\r\\n\\r\\n"
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\\r\\n\\r\\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            size = int(head[i + 15:head.find(b"\\r\\n", i) if head.find(b"\\r\\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + size:
                return
            body, self.buf = self.buf[end + 4:end + 4 + size], self.buf[end + 4 + size:]
            if head.startswith(b"get"):
                self.t.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
            else:
                reply = answer(body)
                self.t.write(HEAD %% len(reply) + reply)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", int(sys.argv[-1]))
    await server.serve_forever()
asyncio.run(main())
"""

C_SERVER = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
static const char REPLY[] = %s;
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1])); a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) { perror("bind"); return 1; }
    char head[1024], buf[65536];
    int hl = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %%zu\r\n\r\n%%s",
                      sizeof REPLY - 1, REPLY);
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t have = 0;
        for (;;) {
            ssize_t n = read(c, buf + have, sizeof buf - 1 - have);
            if (n <= 0) break;
            have += (size_t)n; buf[have] = 0;
            for (;;) {
                char *end = strstr(buf, "\r\n\r\n");
                if (!end) break;
                size_t size = 0; char *cl = strcasestr(buf, "content-length:");
                if (cl && cl < end) size = strtoul(cl + 15, 0, 10);
                size_t total = (size_t)(end - buf) + 4 + size;
                if (have < total) break;
                ssize_t sent = !strncasecmp(buf, "GET", 3)
                    ? write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 40) : write(c, head, (size_t)hl);
                if (sent < 0) break;
                memmove(buf, buf + total, have - total); have -= total; buf[have] = 0;
            }
        }
        close(c);
    }
}
"""


def start(name: str, command: list[str], env: dict[str, str] | None = None) -> Server:
    """A server on a free port (the last argument), on the server's core."""
    port = free_port()
    proc = subprocess.Popen(
        [*command, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
    )
    server = Server(name, f"http://127.0.0.1:{port}/v2/models/iris/infer", [proc])
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return server


def main() -> None:
    args = turns_options(__doc__, seconds=5, rounds=5).parse_args()
    need("wrk", "gcc")
    work = Path(tempfile.mkdtemp(prefix="kbuild-bench-overhead-"))
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    script = post_script(work / "infer.lua", BODY)
    c_literal = '"' + REPLY.decode().replace('"', '\\"') + '"'
    (work / "echo.c").write_text(C_SERVER % c_literal)
    subprocess.run(["gcc", "-O2", "-o", str(work / "echo"), str(work / "echo.c")], check=True)
    (work / "echo.py").write_text(ASYNCIO_SERVER % REPLY)
    servers: list[Server] = []
    try:
        artifact = build_onnx(work)
        os.sched_setaffinity(0, {CLIENT_CPU})  # wrk, started from here, runs there too
        kb = start("kbuild, ONNX iris", [sys.executable, str(artifact), "serve", "--http-port"], env)
        [root] = [p for p in (work / "apps").iterdir() if (p / "app" / "pipeline.json").is_file()]
        servers = [
            kb,
            start(
                "minimal asyncio server, with the artifact's decode, PipelineRunner.run and encode",
                [sys.executable, str(work / "echo.py"), str(root / "app")],
                {**env, "PYTHONPATH": str(root / "site")},
            ),
            start("minimal asyncio server", [sys.executable, str(work / "echo.py")]),
            start("minimal C server", [str(work / "echo")]),
        ]
        timings = Timings(env, "onnx")
        os.sched_setaffinity(timings.proc.pid, {SERVER_CPU})
        for server in servers:
            wrk(server.url, 1, 2, script)
        for round_ in range(args.rounds):
            calls = timings.measure()
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for server in order:
                result = wrk(server.url, 1, args.seconds, script)
                server.results.setdefault(1, []).append(result)
            print(
                f"round {round_ + 1}: PipelineRunner.run {calls['pipeline']:.3f} ms, path {calls['path']:.3f} ms, "
                + ", ".join(f"{s.name} p50 {s.results[1][-1][1]:.3f} ms" for s in servers),
                file=sys.stderr,
            )
        timings.close()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(section := report(servers, timings.rounds, args))
    if args.write:
        write_section("Server overhead", section)


def report(servers: list[Server], calls: list[dict[str, float]], args: argparse.Namespace) -> str:
    kb, path, py, c = servers
    rows = [
        [s.name, f"{median([r[1] for r in s.results[1]]):.3f}", f"{median([r[0] for r in s.results[1]]):,.0f}"]
        for s in servers
    ]
    rows += [
        ["PipelineRunner.run, in-process", f"{median([r['pipeline'] for r in calls]):.3f}", ""],
        ["decode, PipelineRunner.run, encode, in-process", f"{median([r['path'] for r in calls]):.3f}", ""],
    ]
    split = []
    for i, call in enumerate(calls):
        wire, same_path = kb.results[1][i][1], path.results[1][i][1]
        split.append(
            [
                str(i + 1),
                f"{wire:.3f}",
                f"{wire - call['pipeline']:.3f}",
                f"{same_path:.3f}",
                f"{same_path - call['pipeline']:.3f}",
                f"{py.results[1][i][1]:.3f}",
                f"{c.results[1][i][1]:.3f}",
                f"{call['path'] - call['pipeline']:.3f}",
                f"{wire - same_path:.3f}",
            ]
        )
    return (
        "\n".join(
            [
                "## Server overhead",
                "",
                f"`python bench/overhead.py --write` (this run: `--seconds {args.seconds} --rounds {args.rounds}`) on "
                f"{machine()}. wrk, 1 thread, 1 connection; p50 in ms, medians over the rounds.",
                "",
                table(["", "p50 ms", "req/s"], rows),
                "",
                "Per round (ms): the artifact's p50 over the wire and its overhead above PipelineRunner.run; the same for the "
                "minimal asyncio server that runs the artifact's own decode, PipelineRunner.run and encode (no HTTP parser of "
                "its own, batching, metrics or timeouts); the asyncio and C floors; the in-process decode and encode "
                "in a tight loop; and what the artifact spends beyond that minimal server (its HTTP parsing, routing, "
                "batcher, metrics and deadlines).",
                "",
                table(
                    [
                        "round",
                        "artifact p50",
                        "over PipelineRunner.run",
                        "asyncio + path p50",
                        "its overhead",
                        "asyncio floor",
                        "C floor",
                        "decode + encode",
                        "artifact - asyncio + path",
                    ],
                    split,
                ),
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
