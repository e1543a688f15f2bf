"""Outside OCI tools the image tests use as a user would: Debian's skopeo."""

from __future__ import annotations

import shutil
import subprocess

from tests.helpers.build import component_missing


def skopeo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run skopeo; a failure is the test's failure, with skopeo's own words."""
    program = shutil.which("skopeo")
    if program is None:
        component_missing("skopeo is not installed; run `bash scripts/docker-setup.sh` (as root) first")
    assert program is not None
    proc = subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc
