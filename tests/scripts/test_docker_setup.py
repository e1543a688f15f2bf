"""scripts/docker-setup.sh's decisions on machines that lack its tools.

The script runs for real, on a PATH that holds only the shell's basic tools
and stand-ins for the ones it installs: apt-get (it records what it was asked
for and "installs" the stand-in of each package), dockerd, docker, mmdebstrap,
qemu-aarch64-static and the others. Each case takes one tool away, or all of
them, and checks that the script installs what provides it, says so, and
finishes; a failing step must name itself and exit non-zero."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.stand_ins import stand_in

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docker-setup.sh"
# what the script may call that it never installs
BASIC = (
    "bash",
    "env",
    "sed",
    "grep",
    "sort",
    "head",
    "tail",
    "tee",
    "mkdir",
    "mktemp",
    "rm",
    "dirname",
    "sleep",
    "setsid",
    "cat",
    "touch",
    "chmod",
    "cp",
)

# package -> the programs it provides, as stand-ins (bash bodies; $STATE is the stand-ins' own folder)
PACKAGES: dict[str, dict[str, str]] = {
    "docker.io": {
        "dockerd": 'touch "$STATE/engine-up"',
        "docker": """case "$1" in
  version) [ -e "$STATE/engine-up" ] && echo 20.10.24 ;;
  image) [ -e "$STATE/image" ] ;;
  import) touch "$STATE/image" ;;
  run) case "$*" in *pip*) exit 1 ;; esac ;;
  *) exit 2 ;;
esac""",
    },
    "docker-registry": {"docker-registry": "exit 0"},
    "skopeo": {"skopeo": "exit 0"},
    "mmdebstrap": {"mmdebstrap": ': > "${@: -2:1}"'},
    "kubernetes-client": {"kubectl": "exit 0"},
    "qemu-user-static": {"qemu-aarch64-static": 'echo "qemu-aarch64 version ${STUB_QEMU_VERSION:-10.0.0} (Debian)"'},
}
PROGRAM_PACKAGE = {program: package for package, programs in PACKAGES.items() for program in programs}

APT_GET = """log="$STATE/apt.log"
echo "$*" >> "$log"
case " $* " in
  *" install "*)
    [ -z "${STUB_APT_FAIL:-}" ] || { echo "E: Unable to fetch some archives" >&2; exit 100; }
    for word in "$@"; do
      [ -d "$STATE/packages/$word" ] && cp "$STATE/packages/$word/"* "$BIN/"
    done ;;
esac
exit 0"""


@dataclass
class Machine:
    root: Path
    bin: Path
    state: Path
    apt_etc: Path

    def install(self, package: str) -> None:
        for name in PACKAGES[package]:
            shutil.copy(self.state / "packages" / package / name, self.bin / name)

    def remove(self, program: str) -> None:
        (self.bin / program).unlink()

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PATH": str(self.bin),
                "HOME": str(self.root),
                "STATE": str(self.state),
                "BIN": str(self.bin),
                "KBUILD_APT_ETC": str(self.apt_etc),
                "KBUILD_REGISTRY_PROGRAM": str(self.root / "absent"),
                "KBUILD_DOCKERD_LOG": str(self.root / "dockerd.log"),
                "KBUILD_DOCKERD_WAIT_S": "3",
                **env,
            },
        )

    def installs(self) -> list[str]:
        log = self.state / "apt.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if " install " in f" {line} "]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    """A machine that has every tool, an engine that answers and the base image."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    for name in BASIC:
        found = shutil.which(name)
        assert found, f"{name} is not on this machine"
        os.symlink(found, bin_dir / name)
    stand_in(bin_dir / "id", "echo 0")  # root, whoever runs the tests
    stand_in(bin_dir / "apt-get", APT_GET)
    for package, programs in PACKAGES.items():
        folder = state / "packages" / package
        folder.mkdir(parents=True)
        for name, body in programs.items():
            stand_in(folder / name, body)
    m = Machine(tmp_path, bin_dir, state, tmp_path / "etc-apt")
    for package in PACKAGES:
        m.install(package)
    (state / "engine-up").touch()
    (state / "image").touch()
    return m


def test_a_machine_that_has_everything_installs_nothing(machine: Machine) -> None:
    proc = machine.run()
    assert proc.returncode == 0, proc.stderr
    assert machine.installs() == [] and proc.stderr == ""


@pytest.mark.parametrize("program", sorted(PROGRAM_PACKAGE))
def test_each_missing_tool_is_installed_from_its_package(machine: Machine, program: str) -> None:
    machine.remove(program)
    proc = machine.run()
    assert proc.returncode == 0, proc.stderr
    package = PROGRAM_PACKAGE[program]
    installs = machine.installs()
    assert len(installs) == 1 and installs[0].split()[-1] == package, installs
    if package == "qemu-user-static":
        assert "-t bookworm-backports" in installs[0]
        assert "qemu-user-static is missing; installing it from bookworm-backports" in proc.stderr
    else:
        assert f"docker-setup: installing {package}" in proc.stderr
    assert (machine.bin / program).exists()


def test_a_bare_machine_gets_everything_then_the_engine_and_the_base_image(machine: Machine) -> None:
    for program in PROGRAM_PACKAGE:
        machine.remove(program)
    (machine.state / "engine-up").unlink()
    (machine.state / "image").unlink()
    proc = machine.run()
    assert proc.returncode == 0, proc.stderr
    installed = " ".join(machine.installs())
    for package in PACKAGES:
        assert package in installed
    assert "starting dockerd" in proc.stderr and "engine 20.10.24 is up" in proc.stderr
    assert "built kbuild-test/python:3.11-bookworm" in proc.stderr
    # the backports source was added where apt reads its sources
    sources = machine.apt_etc / "sources.list.d" / "kbuild-bookworm-backports.sources"
    assert "Suites: bookworm-backports" in sources.read_text()


def test_an_old_qemu_is_replaced_from_backports(machine: Machine) -> None:
    proc = machine.run(STUB_QEMU_VERSION="7.2.0")
    # the stand-in still says 7.2 after the install: the script must notice
    assert proc.returncode != 0
    assert "qemu-user-static is version 7; installing 8 or later from bookworm-backports" in proc.stderr
    assert "installing qemu-user-static 8 or later: qemu-user-static is 7 after the install" in proc.stderr


def test_a_failing_install_names_its_step_and_exits_non_zero(machine: Machine) -> None:
    machine.remove("skopeo")
    proc = machine.run(STUB_APT_FAIL="1")
    assert proc.returncode != 0
    assert "docker-setup: installing the engine and the OCI tools: apt-get install" in proc.stderr
    assert "skopeo failed" in proc.stderr


def test_without_apt_get_the_message_names_the_supported_system(machine: Machine) -> None:
    machine.remove("apt-get")
    machine.remove("mmdebstrap")
    proc = machine.run()
    assert proc.returncode != 0
    assert "apt-get not found: this setup supports Debian 12 (bookworm)" in proc.stderr


def test_an_engine_that_never_answers_is_reported_with_its_log(machine: Machine) -> None:
    (machine.state / "engine-up").unlink()
    stand_in(machine.bin / "dockerd", 'echo "failed to start daemon: no space" >&2')
    proc = machine.run()
    assert proc.returncode != 0
    assert "starting the Docker engine: dockerd did not answer within 3 s" in proc.stderr
    assert "failed to start daemon: no space" in proc.stderr  # the engine's own log, shown
