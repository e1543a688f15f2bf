"""Resolve requirements into a hash-pinned lock body for a spin, with pip-compile."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import kbuild
from kbuild.plan.spins import Spin
from kbuild.resolve.pip.target_args import pip_target_args
from kbuild.resolve.pip.versions import check_versions


class ResolveFailed(Exception):
    """pip-compile could not resolve; `tail` holds the end of what it said."""

    def __init__(self, tail: list[str]) -> None:
        super().__init__("\n".join(tail))
        self.tail = tail


def resolve(
    requirements: Sequence[str],
    spin: Spin,
    index_urls: Sequence[str],
    *,
    cache: Path,
    previous: str | None,
    upgrade: bool,
) -> str:
    """pip-compile's output (pins with --hash lines, no header) for the spin's
    platform. `previous` is the last lock's text: pip-compile keeps its pins,
    so a lock changes no more than it must."""
    check_versions()
    with tempfile.TemporaryDirectory(prefix="kbuild-lock-") as tmp:
        work = Path(tmp)
        (work / "kbuild.in").write_text("".join(r + "\n" for r in requirements), encoding="utf-8")
        (work / "target.json").write_text(json.dumps({"markers": spin.marker_environment()}), encoding="utf-8")
        out = work / "kbuild.txt"
        if previous is not None and not upgrade:
            out.write_text(previous, encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "kbuild.resolve.pip.compile_for_target",
            str(work / "target.json"),
            "--quiet",
            "--no-header",
            "--generate-hashes",
            "--allow-unsafe",
            "--strip-extras",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--no-emit-options",
            "--cache-dir",
            str(cache / "pip-tools"),
            "--pip-args",
            shlex.join(pip_target_args(spin, index_urls)),
            "--output-file",
            "kbuild.txt",
        ]
        if upgrade:
            cmd.append("--upgrade")
        cmd.append("kbuild.in")
        env = dict(os.environ, PYTHONPATH=_kbuild_import_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise ResolveFailed((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return out.read_text(encoding="utf-8")


def _kbuild_import_root() -> str:
    """The folder holding the kbuild package, for the child's imports."""
    return str(Path(kbuild.__file__).resolve().parent.parent)
