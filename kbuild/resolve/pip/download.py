"""Download locked wheels for a spin's platform with pip, hashes required."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kbuild.plan.spins import Spin
from kbuild.resolve.pip.resolve import ResolveFailed
from kbuild.resolve.pip.target_args import pip_target_args
from kbuild.resolve.pip.versions import check_versions


def download(
    pins: Sequence[tuple[str, str, Sequence[str]]], spin: Spin, index_urls: Sequence[str], dest: Path
) -> list[Path]:
    """Download (name, version, sha256 hashes) pins, no dependencies, into dest;
    the files pip wrote, sorted. ResolveFailed with pip's last words on failure."""
    check_versions()
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest.parent / f"{dest.name}.requirements.txt"
    requirements.write_text(
        "".join(
            f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n"
            for name, version, hashes in pins
        ),
        encoding="utf-8",
    )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        "-q",
        *pip_target_args(spin, index_urls),
        "-d",
        str(dest),
        "-r",
        str(requirements),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ResolveFailed((proc.stderr or proc.stdout).strip().splitlines()[-12:])
    return sorted(dest.glob("*"))
