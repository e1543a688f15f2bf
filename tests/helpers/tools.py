"""Outside OCI tools the image tests use as a user would: Debian's skopeo."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request

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


def wait_http_ready(port: int, timeout: float = 120) -> None:
    """Until GET /v2/health/ready on the port answers 200 (a server in a container)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing ready on port {port} within {timeout} s")
