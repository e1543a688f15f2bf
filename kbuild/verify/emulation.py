"""Running an artifact's `check` for another architecture (or with no engine)
under QEMU's user-mode emulation: `qemu-ARCH-static -L ROOT ROOT/usr/bin/python3`,
with no binfmt registration and no engine.

The root is the image's own root file system for images; for zipapps, a root
made from Debian's packages of that architecture (Python, libstdc++, libgomp),
made once with mmdebstrap and cached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kbuild.verify.artifact_runs import DEFAULT_TIMEOUT_S, Verification, check_command

# QEMU 7.2 (Debian bookworm) crashes in onnxruntime on aarch64; 8 and later run it.
MIN_QEMU = (8, 0)
_VERSION = re.compile(r"version (\d+)\.(\d+)")
# the Debian release that ships each Python as python3
DEBIAN_SUITES = {"3.11": "bookworm", "3.13": "trixie"}
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}
ROOT_PACKAGES = ("libstdc++6", "libgomp1")
DEBIAN_MIRROR_ENV = "KBUILD_DEBIAN_MIRROR"


@dataclass(frozen=True)
class Qemu:
    path: str
    version: tuple[int, int]


def find_qemu(arch: str) -> Qemu | str:
    """QEMU's user-mode emulator for `arch`, or why there is none to use."""
    name = f"qemu-{arch}-static"
    path = shutil.which(name) or shutil.which(f"qemu-{arch}")
    if path is None:
        return f"{name} is not installed (Debian: qemu-user-static from bookworm-backports)"
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"{path} does not run: {error}"
    found = _VERSION.search(proc.stdout)
    version = (int(found[1]), int(found[2])) if found else (0, 0)
    if version < MIN_QEMU:
        return (
            f"{path} is QEMU {version[0]}.{version[1]}, which crashes in native wheels such as onnxruntime; "
            "install version 8 or later (Debian: qemu-user-static from bookworm-backports)"
        )
    return Qemu(path, version)


def emulated_check(
    qemu: Qemu,
    root: Path,
    python: Path,
    args: list[str],
    env: dict[str, str],
    arch: str,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Verification:
    """Run PYTHON ARGS (ending in `check`) under QEMU with ROOT as the guest's /."""
    run_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp"), **env}
    verification = check_command([qemu.path, "-L", str(root), str(python), *args], env=run_env, timeout=timeout)
    return Verification(
        f"verified (emulated {arch})",
        f"{verification.detail} (under QEMU {qemu.version[0]}.{qemu.version[1]}, user mode)",
    )


def debian_root(cache: Path, arch: str, python: str) -> Path | str:
    """A root with Debian's Python `python` for `arch`, made once; or why not."""
    suite = DEBIAN_SUITES.get(python)
    deb_arch = _DEBIAN_ARCH.get(arch)
    if suite is None or deb_arch is None:
        return f"no Debian release ships Python {python} for {arch}"
    folder = cache / "roots" / f"debian-{suite}-{deb_arch}"
    root = folder / "root"
    if (folder / ".complete").is_file():
        return root
    tool = shutil.which("mmdebstrap")
    if tool is None:
        return "mmdebstrap is not installed, so no root for the emulated check can be made (Debian: mmdebstrap)"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    mirror = os.environ.get(DEBIAN_MIRROR_ENV, "http://deb.debian.org/debian")
    command = [
        tool,
        "--variant=extract",
        f"--arch={deb_arch}",
        f"--include=python{python},{','.join(ROOT_PACKAGES)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        suite,
        str(root),
        mirror,
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"mmdebstrap failed: {error}"
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        return f"mmdebstrap could not make a {deb_arch} root: {tail}"
    (folder / ".complete").write_text(suite)
    return root
