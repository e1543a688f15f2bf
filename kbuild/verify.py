"""Verify: run the spec's samples through the artifact's own runtime.

At build time the samples run on the unpacked artifact root (with the spin's
wheels, not kbuild's environment) and their outputs are embedded; then the
finished artifact's `check` must reproduce them. A spin this machine cannot run
is reported as not verified, never as passed.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import VerificationError

_TIMEOUT_S = 600
_RECORD = (
    "import sys, pathlib; sys.path.insert(0, sys.argv[1] + '/site');"
    "from kbuild.runtime.cli import main; sys.exit(main(['record'], pathlib.Path(sys.argv[1])))"
)


@dataclass(frozen=True)
class Verification:
    status: str  # passed | failed | not verified | no samples
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


def record_samples(root: Path, python: str) -> list[Any]:
    """Outputs of every sample, computed by the runtime in `root` under an isolated interpreter."""
    proc = subprocess.run(
        [python, "-I", "-S", "-c", _RECORD, str(root)], capture_output=True, text=True, timeout=_TIMEOUT_S
    )
    if proc.returncode != 0:
        raise VerificationError(
            "the pipeline failed on its samples at build time", proc.stderr.strip().splitlines()[-15:]
        )
    try:
        outputs: list[Any] = json.loads(proc.stdout)
    except ValueError as error:
        raise VerificationError(f"the runtime printed no sample outputs: {error}") from error
    return outputs


def check_command(command: list[str], env: dict[str, str] | None = None) -> Verification:
    """Run an artifact's `check`; raise VerificationError if it fails."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise VerificationError("the built artifact failed its check", output.splitlines()[-20:])
    last = output.splitlines()[-1] if output else "check passed"
    return Verification("passed", last)
