"""The thread that runs slow pipeline calls off the event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from kbuild.runtime.tensors import Vars

T = TypeVar("T")


class PipelineThread(Generic[T]):
    """The pipeline thread. A daemon: a call that never returns must not keep
    the process alive after the server has stopped."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[Vars], T], Vars, Callable[[T], None]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._main, name="kbuild-pipeline", daemon=True).start()

    def submit(self, fn: Callable[[Vars], T], batch: Vars, done: Callable[[T], None]) -> None:
        self._jobs.put((fn, batch, done))

    def stop(self) -> None:
        self._jobs.put(None)

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            fn, batch, done = item
            outcome = fn(batch)
            del batch
            try:
                self._loop.call_soon_threadsafe(done, outcome)
            except RuntimeError:  # the loop has closed: the server is gone
                return
