"""What every benchmark needs: the machine it ran on, tables, ports, timing."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"


def machine() -> str:
    """One line naming the machine, for every table."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    today = _dt.date.today().isoformat()
    return (
        f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB memory, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {today}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120.0) -> float:
    """Seconds until `url` answers 200 (polling every 5 ms)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def kbuild(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild", *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kbuild {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def write_section(title: str, section: str) -> None:
    """Put `section` (starting "## {title}") into BENCHMARKS.md in place of the
    section of that title, or at the end; the other sections stay as they are."""
    import re

    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def turns_options(doc: str, seconds: int, rounds: int) -> argparse.ArgumentParser:
    """The parser of a benchmark whose servers take turns under wrk, with the
    options they all share (--seconds, --rounds, --write); the benchmark adds
    its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=seconds, help=f"wrk run length (default {seconds})")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds of turns (default {rounds})")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    return parser


def need(*tools: str) -> None:
    """Stop, saying which, where a program the benchmark runs is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")


def post_script(path: Path, body: str) -> Path:
    """A wrk script at `path` that POSTs the JSON `body`."""
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    return path
