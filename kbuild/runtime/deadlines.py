"""Request deadlines on an event loop: each request's answer fails with
RequestTimeout (504) when its deadline passes, whether it is still queued or
its call is still running.

One FIFO per timeout value keeps each in deadline order, so a single timer,
set for the earliest deadline, serves every request: a sweep fails what has
expired and re-arms for the next. Answered requests leave from the front of
their FIFO as new ones come in, so a FIFO holds about as many requests as are
in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from kbuild.runtime.answers import Answer
from kbuild.runtime.contract.errors import AppError


class RequestTimeout(AppError):
    """A request was not answered within its deadline."""

    exit_code = 4
    http_status = 504


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fifos: dict[float, deque[tuple[float, Answer]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def track(self, answer: Answer, deadline: float, timeout: float) -> None:
        """Fail `answer` at `deadline` (loop time), `timeout` seconds after it
        was queued, unless it is done by then."""
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        while fifo and fifo[0][1].done():
            fifo.popleft()
        fifo.append((deadline, answer))
        if self._sweeper is None:
            self._sweeper = self._loop.call_at(deadline, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._loop.time()
        earliest = math.inf
        for timeout, fifo in self._fifos.items():
            while fifo and (fifo[0][1].done() or fifo[0][0] <= now):
                _, answer = fifo.popleft()
                if not answer.done():
                    answer.set_exception(RequestTimeout(f"no answer within the request timeout of {timeout:g} s"))
            if fifo:
                earliest = min(earliest, fifo[0][0])
        if earliest < math.inf:
            self._sweeper = self._loop.call_at(earliest, self._sweep)
