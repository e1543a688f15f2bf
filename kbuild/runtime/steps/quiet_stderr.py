"""Native libraries that print notices to file descriptor 2 whatever their log
level (LiteRT's delegate line, TensorFlow's oneDNN and absl start-up lines):
run what prints them with those lines held back, amid the runtime's JSON log
lines, and everything else written meanwhile passed on."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def quietly(make: Callable[[], T], notices: Sequence[bytes]) -> T:
    """make(), without the stderr lines that start with one of `notices`."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            made = make()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().splitlines(keepends=True)
    rest = [line for line in lines if not line.startswith(tuple(notices))]
    if rest:
        sys.stderr.buffer.write(b"".join(rest))
        sys.stderr.flush()
    return made
