"""Structured log lines: one JSON object per line, for log collectors.

Servers log lifecycle events (start, ready, stop), never one line per request:
at thousands of requests a second the log would cost more than the model.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO


def log_event(stream: TextIO, event: str, level: str = "info", **fields: Any) -> None:
    now = time.time()
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "level": level,
        "event": event,
        "pid": os.getpid(),
        **fields,
    }
    stream.write(json.dumps(record, default=str) + "\n")
    stream.flush()
