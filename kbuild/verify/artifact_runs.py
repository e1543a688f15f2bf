"""Verify: run the spec's samples through the artifact's own runtime.

At build time the samples run on a staged copy of the artifact root (with the
spin's wheels, not kbuild's environment) and their outputs are embedded; then
the finished artifact's `check` must reproduce them. A spin this machine cannot
run is reported as not verified, never as passed.

Both runs are bounded by a timeout. The runtime names each step on stderr
before it loads or runs it, so a run that hangs is reported with the step it
hung in.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.errors import VerificationError
from kbuild.plan.pipeline_plan import Plan
from kbuild.render.artifact_root import render_root
from kbuild.resolve.fetch import Wheel
from kbuild.runtime.contract.bootstrap import install_wheel
from kbuild.runtime.contract.layout import SITE_DIR, TRACE_ENV, TRACE_PREFIX

DEFAULT_TIMEOUT_S = 600.0
# The record run also measures itself (start to answers, peak memory) for the
# deployment's sizing, on one line of stderr after a marker.
MEASURED = "kbuild-measured "
_RECORD = (
    "import sys, time, json, resource, pathlib; start = time.monotonic(); sys.path.insert(0, sys.argv[1] + '/site');"
    "from kbuild.runtime.cli import main; code = main(['record'], pathlib.Path(sys.argv[1]));"
    "ready = time.monotonic() - start; peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024;"
    f"print({MEASURED!r} + json.dumps({{'peak_rss_bytes': peak, 'ready_s': round(ready, 3)}}), file=sys.stderr);"
    "sys.exit(code)"
)


@dataclass(frozen=True)
class Verification:
    status: str  # passed | failed | not verified | no samples
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}

    def noted(self, note: str | None) -> Verification:
        """The same verdict, with a note (e.g. that no step used the accelerator) after its detail."""
        return Verification(self.status, f"{self.detail}; {note}") if note else self


def record_samples(root: Path, python: str, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[list[Any], dict[str, Any]]:
    """Outputs of every sample, computed by the runtime in `root` under an isolated
    interpreter; and what the run measured (peak_rss_bytes, ready_s: start, load
    and the samples), for sizing the deployment."""
    proc = _run([python, "-I", "-S", "-c", _RECORD, str(root)], None, timeout, "recording the samples")
    if proc.returncode != 0:
        raise VerificationError("the pipeline failed on its samples at build time", untraced(proc.stderr)[-15:])
    try:
        outputs: list[Any] = json.loads(proc.stdout)
    except ValueError as error:
        raise VerificationError(f"the runtime printed no sample outputs: {error}") from error
    measured: dict[str, Any] = {}
    for line in proc.stderr.splitlines():
        if line.startswith(MEASURED):
            measured = json.loads(line[len(MEASURED) :])
    return outputs, measured


def check_command(
    command: list[str], env: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> Verification:
    """Run an artifact's `check`; raise VerificationError if it fails or hangs."""
    proc = _run(command, env, timeout, "the artifact's check")
    output = "\n".join(untraced(proc.stdout + proc.stderr))
    if proc.returncode != 0:
        raise VerificationError("the built artifact failed its check", output.splitlines()[-20:])
    # the check's verdict is on stdout; libraries may warn on stderr after it
    printed = untraced(proc.stdout) or output.splitlines()
    last = printed[-1] if printed else "check passed"
    return Verification("passed", last)


def _run(command: list[str], env: dict[str, str] | None, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    env = {**(os.environ if env is None else env), TRACE_ENV: "1"}
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as expired:
        raise VerificationError(
            f"{what} did not finish within {timeout:g} s: {last_step(expired.stderr)}",
            ["raise --verify-timeout if the pipeline is slow, or fix the step that hangs"],
        ) from None


def _text(value: str | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def last_step(stderr: str | bytes | None) -> str:
    traced = [line for line in _text(stderr).splitlines() if line.startswith(TRACE_PREFIX)]
    if not traced:
        return "it hung before loading any step"
    return f"it was {traced[-1][len(TRACE_PREFIX) :].strip()}"


def untraced(output: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith((TRACE_PREFIX, MEASURED))]


def host_cpu_note(plan: Any) -> tuple[str | None, str | None]:
    """(why this machine cannot check the spin's accelerator, None) or
    (None, a note when an accelerator spin's steps all ran on the host CPU)."""
    spin = plan.spin
    if spin.accelerator == "cpu":
        return None, None
    if all(p.backend.device == "cpu" for p in plan.steps):
        return None, f"no step used the {spin.accelerator}: every step runs on the {spin.arch} host's CPU"
    return f"spin {spin.name} needs a {spin.accelerator} accelerator, which this check does not attach", None


def host_runner(plan: Any) -> tuple[str | None, str | None]:
    """(a Python here that runs the spin's artifacts natively, a note) or (None, None).
    An accelerator spin whose steps all run on its host CPU runs here like a CPU spin."""
    from kbuild.plan.spins import host_arch, python_of_version

    spin = plan.spin
    python = spin.host_python()
    if python is not None:
        return python, None
    reason, note = host_cpu_note(plan)
    if reason is None and note and spin.os == "linux" and spin.arch == host_arch():
        found = python_of_version(spin.python)
        return (found, note) if found else (None, None)
    return None, None


def samples_at_build_time(
    plan: Plan, wheels: list[Wheel], run_root: Path, timeout: float, progress: Callable[[str], None]
) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The samples' outputs from the artifact's own runtime and wheels, with
    what the run measured, where the spin runs on this machine; (None, None)
    where it cannot (not recorded)."""
    python, _ = host_runner(plan)
    if python is None or not plan.pipeline.samples:
        return None, None
    progress("running the samples at build time")
    render_root(plan, run_root, {})
    for wheel in wheels:
        install_wheel(wheel.path, run_root / SITE_DIR)
    return record_samples(run_root, python, timeout)
