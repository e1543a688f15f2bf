"""How the outcome of a queued request gets back to the transport that queued it.

The batcher and the deadline timer settle an Answer: outputs (None: the record
was dropped) or the exception that fails the request. An asyncio future is one
(gRPC and MQTT await theirs). The HTTP server uses a Callback instead, which
hands the outcome to its connection at once, on the stack that settles it. A
future schedules each of its callbacks for a later loop iteration, and at 32
connections that was one more loop callback per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from kbuild.runtime.tensors import Vars

# The outputs (None: dropped) or what failed the request.
Outcome = Vars | None | BaseException


class Answer(Protocol):
    def done(self) -> bool: ...

    def set_result(self, result: Vars | None, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Callback:
    """An Answer that hands its outcome to one function, once: the one given
    to attach(), called when the answer is settled (or at once, when it was
    settled before). Cancelling withdraws the request: the answer is then
    done, and the function is never called."""

    __slots__ = ("_then", "_done", "_outcome", "_settled")

    def __init__(self) -> None:
        self._then: Callable[[Outcome], None] | None = None
        self._done = False  # settled or cancelled
        self._settled = False
        self._outcome: Outcome = None

    def attach(self, then: Callable[[Outcome], None]) -> None:
        if self._settled:
            self._settled = False
            self._call(then, self._outcome)
        elif not self._done:
            self._then = then

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        self._done = True
        self._settled = False
        self._then = None
        self._outcome = None

    def set_result(self, result: Vars | None, /) -> None:
        self._settle(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._settle(exception)

    def _settle(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        then = self._then
        if then is None:  # not attached yet: kept for attach()
            self._settled = True
            self._outcome = outcome
        else:
            self._then = None
            self._call(then, outcome)

    @staticmethod
    def _call(then: Callable[[Outcome], None], outcome: Outcome) -> None:
        try:
            then(outcome)
        except Exception as e:  # one request's bug must not stop the batch that settles it
            asyncio.get_running_loop().call_exception_handler({"message": "a request's answer failed", "exception": e})
