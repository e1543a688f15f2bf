"""The Markdown section of bench/peers.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from common import machine, table

NAMES = {
    "tabular": "tabular (iris, scikit-learn)",
    "text": "text (tokenizer + 4-layer transformer, ONNX)",
    "cnn": "CNN (image decoding + ResNet-style network, ONNX)",
}


def report(
    measured: dict[str, tuple[list[Any], Any]], args: argparse.Namespace, median: Callable[[Sequence[float]], float]
) -> str:
    lines = [
        "## Peers",
        "",
        f"`python bench/peers.py --write` (this run: `--seconds {args.seconds} --rounds {args.rounds}`) on "
        f"{machine()}. Medians over the rounds; the ratios are kbuild's requests/s over the best peer's, "
        "in each round. Peak RSS sums the server's processes; environment is what it runs from "
        "(a peer's virtual environment with the model libraries; kbuild's zipapp and what it unpacks).",
        "",
    ]
    for model, (servers, calls) in measured.items():
        rows = []
        for s in servers:
            one, many = s.results[1], s.results[32]
            rows.append(
                [
                    s.name,
                    f"{median([r[0] for r in one]):,.0f}",
                    f"{median([r[1] for r in one]):.2f}",
                    f"{median([r[2] for r in one]):.2f}",
                    f"{median([r[0] for r in many]):,.0f}",
                    f"{median([r[1] for r in many]):.2f}",
                    f"{median([r[2] for r in many]):.2f}",
                    f"{s.ready_s:.1f}",
                    f"{s.peak_rss_mib:.0f}",
                    f"{s.size_mib:.0f}",
                    str(sum(r[3] for r in one + many)),
                ]
            )
        lines += [
            f"### {NAMES[model]}",
            "",
            table(
                [
                    "server",
                    "req/s, 1 conn",
                    "p50 ms",
                    "p99 ms",
                    "req/s, 32 conns",
                    "p50 ms",
                    "p99 ms",
                    "ready s",
                    "peak RSS MiB",
                    "environment MiB",
                    "failed",
                ],
                rows,
            ),
            "",
        ]
        kb, peers = servers[0], servers[1:]
        for connections in (32, 1):
            ratios = []
            for i in range(args.rounds):
                best = max(peers, key=lambda p: p.results[connections][i][0])
                ratios.append(f"{kb.results[connections][i][0] / best.results[connections][i][0]:.1f}× ({best.name})")
            lines.append(
                f"- kbuild over the best peer at {connections} connection{'s' if connections > 1 else ''}, "
                f"per round: {', '.join(ratios)}"
            )
        if calls:
            per_round = []
            for i, t in enumerate(calls):
                over = kb.results[1][i][1] - t["p50_ms"]
                share = kb.results[32][i][0] / t["rows_per_s"]
                per_round.append(
                    f"round {i + 1}: one row {t['p50_ms']:.2f} ms in-process, {over:+.2f} ms over "
                    f"the wire at 1 connection; 32-row batches {t['rows_per_s']:,.0f} rows/s "
                    f"in-process, HTTP at 32 connections {share:.0%} of it"
                )
            lines += ["- kbuild against its own Pipeline.run in-process:", *[f"  - {r}" for r in per_round]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
