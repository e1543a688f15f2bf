"""The Markdown section of the serving benchmark (bench/serving.py)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402
from serving_servers import BATCHING, Server, flow  # noqa: E402

CONNECTIONS = (1, 32)
COMMAND = "python bench/serving.py --write"


def report(
    kb: Server,
    mls: list[Server],
    onnx: Server,
    variants: list[Server],
    calls: list[dict[str, float]],
    onnx_calls: list[dict[str, float]],
    args: argparse.Namespace,
) -> str:
    mls0, mls1 = mls
    rows = []
    ratios = []
    for c in CONNECTIONS:
        med = {s.name: tuple(median(r[i] for r in s.results[c]) for i in range(3)) for s in [kb, *mls]}
        best = max((mls0, mls1), key=lambda s: med[s.name][0])
        for s in [kb, mls0, mls1]:
            rps, p50, p99 = med[s.name]
            rows.append([c, s.name, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"])
        # Ratios of the same round: both servers met the same load on the machine.
        paired = [(k[0] / b[0], k[1] / b[1], k[2] / b[2]) for k, b in zip(kb.results[c], best.results[c], strict=True)]
        ratios.append(
            [
                c,
                best.name.split(", ")[1],
                f"{median(r[0] for r in paired):.1f}× (lowest {min(r[0] for r in paired):.1f}×)",
                f"{median(r[1] for r in paired):.2f}",
                f"{median(r[2] for r in paired):.2f}",
            ]
        )
    overheads = [r[1] - t["model"] for r, t in zip(kb.results[1], calls, strict=True)]
    model = median(t["model"] for t in calls)
    setup = (
        f"{machine()}. Command: `{COMMAND}` (this run: `--seconds {args.seconds} --rounds "
        f"{args.rounds}{' --variants' if args.variants else ''}`). wrk (1 thread) sends one OIP JSON "
        "request (1×4 FP32) to `/v2/models/iris/infer`; both servers run the scikit-learn iris "
        f"model (`predict`); kbuild with `batching: {flow(BATCHING)}`, "
        f"MLServer with its defaults and `parallel_workers` 0 or 1. {args.rounds} rounds; in each "
        f"the servers (and the ONNX artifact below) take turns (the order rotates) for "
        f"{args.seconds} s each. The machine is "
        "shared with other work and single runs vary widely, so the tables give medians over "
        "rounds, and ratios are taken within a round."
    )
    latency = (
        "Latency at 1 connection against the model call itself: the model call "
        "(`estimator.predict` on one row, in-process in the artifact's environment, measured at "
        f"the start of each round) takes {model:.3f} ms (median); kbuild's pipeline call "
        f"{median(t['pipeline'] for t in calls):.3f} ms; decode + pipeline + encode of the "
        f"request {median(t['path'] for t in calls):.3f} ms. kbuild's p50 over the wire is above "
        f"the model call by {median(overheads):.2f} ms (median of rounds; {min(overheads):.2f} "
        f"to {max(overheads):.2f} ms)."
    )
    text = (
        "## Serving\n\n"
        + fill(setup)
        + "\n\n"
        + table(["connections", "server", "requests/s", "p50 ms", "p99 ms"], rows)
        + "\nkbuild against MLServer's better configuration, per round:\n\n"
        + table(["connections", "MLServer baseline", "requests/s ×", "p50 ratio", "p99 ratio"], ratios)
        + "\n"
        + fill(latency)
        + "\n\n"
        + onnx_report(onnx, onnx_calls)
    )
    if variants:
        variant_rows = []
        gains: dict[tuple[str, int], list[float]] = {}
        for s in variants:
            for c in CONNECTIONS:
                times = gains[(s.name, c)] = [v[0] / k[0] for v, k in zip(s.results[c], kb.results[c], strict=True)]
                p50 = median(r[1] for r in s.results[c])
                variant_rows.append(
                    [
                        s.name,
                        c,
                        f"{median(r[0] for r in s.results[c]):,.0f}",
                        f"{median(times):.2f} ({min(times):.2f}–{max(times):.2f})",
                        f"{p50:.2f}",
                    ]
                )
        text += "\nStacks considered (same rounds; requests/s relative to kbuild as built, per round):\n\n"
        text += table(["variant", "connections", "requests/s", "× kbuild (range)", "p50 ms"], variant_rows)
        text += (
            "\n"
            + fill(
                "Batching is what multiplies throughput under concurrency. uvloop's event loop "
                f"gives {_gains(gains, 'kbuild, uvloop')} (requests/s against kbuild as built, per "
                "round: median, lowest–highest); "
                + (
                    "as long as rounds disagree on whether it helps at all, it does not pay for a "
                    "native dependency in every artifact, so it is not used. "
                    if any(min(g) < 1.0 for (name, _), g in gains.items() if name == "kbuild, uvloop")
                    else "it helps in every round here: a case to reconsider it. "
                )
                + "A second server process was not pursued: on these two cores MLServer's "
                "parallel_workers 1 is slower than 0."
            )
            + "\n"
        )
    return text


def _gains(gains: dict[tuple[str, int], list[float]], name: str) -> str:
    """'×1.12 at 32 connections (rounds 0.77–1.19), ×0.98 at 1 connection (…)'."""
    return ", ".join(
        f"×{_spread(gains[(name, c)], '{:.2f}')} at {c} connection{'s' if c > 1 else ''}"
        for c in sorted(CONNECTIONS, reverse=True)
    )


OVERHEAD_HEADERS = (
    "connections",
    "p50 − `Pipeline.run` ms",
    "p50 − decode-run-encode ms",
    "p50 ÷ `Pipeline.run`",
    "requests/s ÷ in-process (1 / decode-run-encode)",
)


def onnx_report(onnx: Server, calls: list[dict[str, float]]) -> str:
    """The ONNX pipeline's artifact against its own in-process calls: MLServer 1.7.1
    has no ONNX runtime to compare it with."""
    one, many = CONNECTIONS
    run = [t["pipeline"] for t in calls]
    path = [t["path"] for t in calls]
    rows: list[list[object]] = [
        ["in-process: `Pipeline.run`, one row", "–", f"{1e3 / median(run):,.0f} (1 / p50)", f"{median(run):.3f}", "–"],
        [
            "in-process: decode + `Pipeline.run` + encode of the request",
            "–",
            f"{1e3 / median(path):,.0f} (1 / p50)",
            f"{median(path):.3f}",
            "–",
        ],
    ]
    for c in CONNECTIONS:
        rps, p50, p99 = (median(r[i] for r in onnx.results[c]) for i in range(3))
        rows.append(["kbuild artifact over HTTP", c, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"])
    # Each round's wire numbers against the in-process calls of the same round.
    # Only at one connection is the p50 one request's time: with more, it is mostly
    # the wait behind the others.
    wire = onnx.results[one]
    above_run = [r[1] - t for r, t in zip(wire, run, strict=True)]
    above_path = [r[1] - t for r, t in zip(wire, path, strict=True)]
    times_run = [r[1] / t for r, t in zip(wire, run, strict=True)]
    codec = [p - t for p, t in zip(path, run, strict=True)]
    # requests/s against one request at a time through decode, Pipeline.run, encode
    limit = {c: [r[0] * t / 1e3 for r, t in zip(onnx.results[c], path, strict=True)] for c in CONNECTIONS}
    overheads: list[list[object]] = [
        [
            one,
            _spread(above_run, "{:.2f}"),
            _spread(above_path, "{:.2f}"),
            _spread(times_run, "{:.1f}×"),
            _spread(limit[one], "{:.2f}"),
        ],
        [many, "–", "–", "–", _spread(limit[many], "{:.2f}")],
    ]
    setup = (
        "The same for the ONNX iris pipeline (`examples/iris/pipeline.yaml` with its lock: an "
        "ONNX model and a `classify` step, answering `label` and `probability`), which shows "
        f"the server's own overhead: its artifact is built with `batching: {flow(BATCHING)}` "
        f"like the kbuild row above, gets the same request from wrk at {one} and {many} "
        "connections, and is measured in the same rounds, taking turns with the servers above. "
        "MLServer 1.7.1 has no ONNX runtime among its inference runtimes, so this table compares "
        "the artifact with its in-process limit only: `Pipeline.run` on one row and the whole "
        "decode + `Pipeline.run` + encode path of one request, timed in-process in the "
        "artifact's environment at the start of each round (their requests/s: one call at a "
        "time, 1 / p50)."
    )
    analysis = (
        f"At {one} connection the artifact's p50 over the wire is {median(above_run):.2f} ms "
        f"above `Pipeline.run` (median of rounds; {min(above_run):.2f} to "
        f"{max(above_run):.2f} ms); decoding the request and encoding the answer account for "
        f"{median(codec):.3f} ms of that, and the remaining {median(above_path):.2f} ms is the "
        "server and the loopback round trip (HTTP, the event loop, the batcher, wrk's side). "
        f"At {many} connections it answers {median(limit[many]):.2f}× as many requests per "
        "second as the in-process decode + `Pipeline.run` + encode path run one request at a "
        "time (median of rounds)."
    )
    return (
        fill(setup)
        + "\n\n"
        + table(["measured", "connections", "requests/s", "p50 ms", "p99 ms"], rows)
        + "\n"
        + fill(
            "The artifact over HTTP against the in-process calls of the same round (median "
            "over rounds, lowest–highest in parentheses):"
        )
        + "\n\n"
        + table(OVERHEAD_HEADERS, overheads)
        + "\n"
        + fill(analysis)
        + "\n"
    )


def fill(text: str) -> str:
    """A paragraph at 92 columns, never broken inside a hyphenated word."""
    return textwrap.fill(text, 92, break_on_hyphens=False)


def _spread(values: list[float], fmt: str) -> str:
    """median (lowest–highest)"""
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
