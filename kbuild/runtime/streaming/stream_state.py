"""What the parts of a stream share: its clients, its book of offsets and
outputs, its metrics, and a rate-limited warning."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, TextIO

from confluent_kafka import (
    Consumer,
    Message,
    Producer,
)

from kbuild.runtime.contract.kafka import StreamConfig
from kbuild.runtime.inference import Service
from kbuild.runtime.log import log_event
from kbuild.runtime.streaming.clients import Headers
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.offsets import OffsetBook

# topic, key, value, headers
Output = tuple[str, bytes | None, bytes | None, Headers]


class StreamState:
    """Attributes set by Stream.__init__ and its run loop; the parts read them."""

    config: StreamConfig
    service: Service
    metrics: StreamMetrics
    log: TextIO
    book: OffsetBook
    stopping: threading.Event
    grace: float
    _consumer: Consumer | None
    _producer: Producer | None
    _retries: deque[tuple[float, Output]]  # (due, output)
    _held: list[Message]  # consumed while settling
    _group_offsets: dict[int, int]  # partition -> the group's committed offset when it came to this replica
    _static_headers: Headers
    _last_error: float

    def _warn(self, event: str, **fields: Any) -> None:
        """At most one line per second: a stalled broker fails every record."""
        now = time.monotonic()
        if now - self._last_error >= 1.0:
            self._last_error = now
            log_event(self.log, event, level="warning", **fields)
