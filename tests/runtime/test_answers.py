"""The Callback answer: one outcome, handed over once, on the settling stack."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from kbuild.runtime.answers import Callback, Outcome
from kbuild.runtime.deadlines import Deadlines, RequestTimeout


def test_the_outcome_reaches_the_attached_function_once() -> None:
    seen: list[Outcome] = []
    answer = Callback()
    answer.attach(seen.append)
    outputs = {"y": np.zeros(1)}
    answer.set_result(outputs)
    answer.set_exception(ValueError("late"))
    assert seen == [outputs] and answer.done()


def test_an_outcome_settled_before_attach_is_handed_over_on_attach() -> None:
    seen: list[Outcome] = []
    answer = Callback()
    error = ValueError("bad row")
    answer.set_exception(error)
    assert answer.done() and not seen
    answer.attach(seen.append)
    answer.attach(seen.append)
    assert seen == [error]


def test_a_cancelled_answer_is_done_and_never_calls() -> None:
    seen: list[Outcome] = []
    answer = Callback()
    answer.attach(seen.append)
    answer.cancel()
    answer.set_result(None)
    assert answer.done() and not seen


def test_a_failing_function_is_reported_to_the_loop_not_raised() -> None:
    reported: list[dict[str, Any]] = []

    def broken(outcome: Outcome) -> None:
        raise RuntimeError("bug")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        answer = Callback()
        answer.attach(broken)
        answer.set_result(None)  # does not raise

    asyncio.run(main())
    assert [type(c["exception"]) for c in reported] == [RuntimeError]


def test_a_deadline_fails_a_callback_with_request_timeout() -> None:
    seen: list[Outcome] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        answer = Callback()
        answer.attach(seen.append)
        deadlines.track(answer, loop.time() + 0.01, 0.01)
        await asyncio.sleep(0.05)
        deadlines.close()

    asyncio.run(main())
    [outcome] = seen
    assert isinstance(outcome, RequestTimeout) and outcome.http_status == 504
