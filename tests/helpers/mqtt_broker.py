"""A mosquitto broker of the test's own on a loopback port (Debian's package,
unpacked by scripts/test-tools.sh); under CI=true a missing mosquitto fails."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.build import component_missing, free_port

START_TIMEOUT_S = 10.0


@dataclass
class Mosquitto:
    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        program = shutil.which("mosquitto")
        assert program is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([program, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    for program in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(program) is None:
            component_missing(f"{program} is not on PATH: run scripts/test-tools.sh and put the folder it prints on PATH")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = Mosquitto(port, config, tmp_path / "mosquitto.log")
    broker.start()
    yield broker
    broker.stop()
