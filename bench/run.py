"""Every benchmark in one run, each writing its section of BENCHMARKS.md.

    python bench/run.py

Serving (the artifact vs MLServer 1.7.1 vs the model call, the ONNX pipeline vs
its in-process call, the server stacks considered; with wrk), streaming
(records/s vs a consume→produce passthrough on a local Tansu broker), build
time, size and cold start. Needs wrk (`apt-get install wrk`), the test extra
(`pip install -e '.[test]'`) and, for the image rows, a Docker engine with the
base image of `scripts/docker-setup.sh`. Each part is also a command of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = (["serving.py", "--write", "--variants"], ["streaming.py", "--write"], ["artifacts.py", "--write"])


def main() -> int:
    for script, *args in PARTS:
        print(f"== {script} {' '.join(args)}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), *args])
        if proc.returncode != 0:
            print(f"{script} failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
