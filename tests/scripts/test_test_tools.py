"""scripts/test-tools.sh on machines that lack what it unpacks: stand-ins for
apt-get (download) and dpkg-deb (-x) give "packages" whose programs print
what the script checks; the script itself runs for real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.stand_ins import stand_in

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test-tools.sh"
BASIC = ("bash", "env", "mkdir", "mktemp", "rm", "ln", "chmod", "basename", "uname", "grep", "cat", "touch")

APT_GET = """echo "$*" >> "$STATE/apt.log"
case "$1" in
  download) [ -z "${STUB_FAIL:-}" ] || { echo "E: Can't find a source to download $3" >&2; exit 100; }
            touch "${3}_1.0_amd64.deb" ;;
esac"""
# dpkg-deb -x FILE.deb DIR: the programs of that package, printing what the script looks for
DPKG_DEB = """deb="$(basename "$2")"; package="${deb%%_*}"; root="$3"
mkdir -p "$root/usr/bin" "$root/usr/sbin"
case "$package" in
  prometheus) printf '#!/bin/bash\\necho "promtool, version 2.42.0"\\n' > "$root/usr/bin/promtool" ;;
  mosquitto) printf '#!/bin/bash\\necho "mosquitto version 2.0.11"; exit 3\\n' > "$root/usr/sbin/mosquitto"
             printf '#!/bin/bash\\nexit 1\\n' > "$root/usr/bin/mosquitto_passwd" ;;
  mosquitto-clients) for p in mosquitto_pub mosquitto_sub; do
      printf '#!/bin/bash\\necho "%s is a simple mqtt client"; exit 1\\n' "$p" > "$root/usr/bin/$p"; done ;;
esac
chmod +x "$root"/usr/bin/* "$root"/usr/sbin/* 2>/dev/null || true"""


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BASIC:
        found = shutil.which(name)
        assert found, f"{name} is not on this machine"
        os.symlink(found, bin_dir / name)
    stand_in(bin_dir / "apt-get", APT_GET)
    stand_in(bin_dir / "dpkg-deb", DPKG_DEB)
    return tmp_path


def run(machine: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=machine,
        env={
            "PATH": str(machine / "bin"),
            "HOME": str(machine),
            "STATE": str(machine),
            "KBUILD_TEST_TOOLS": str(machine / "tools"),
            **env,
        },
    )


def test_a_machine_without_the_tools_gets_them_unpacked_then_nothing_more(machine: Path) -> None:
    proc = run(machine)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(machine / "tools" / "bin")
    for program in ("promtool", "mosquitto", "mosquitto_passwd", "mosquitto_pub", "mosquitto_sub"):
        assert os.access(machine / "tools" / "bin" / program, os.X_OK), program
    assert "unpacking promtool from Debian's prometheus package" in proc.stderr
    downloads = (machine / "apt.log").read_text().count("download")
    again = run(machine)
    assert again.returncode == 0 and again.stderr == ""
    assert (machine / "apt.log").read_text().count("download") == downloads  # cached: nothing fetched twice


def test_a_failing_download_names_its_step(machine: Path) -> None:
    proc = run(machine, STUB_FAIL="1")
    assert proc.returncode != 0
    assert "test-tools: unpacking promtool: apt-get download prometheus failed" in proc.stderr


def test_without_apt_get_the_message_names_the_supported_system(machine: Path) -> None:
    (machine / "bin" / "apt-get").unlink()
    proc = run(machine)
    assert proc.returncode != 0
    assert "apt-get not found: this setup supports Debian 12 (bookworm)" in proc.stderr
