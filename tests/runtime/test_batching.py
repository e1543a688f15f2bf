"""The batcher on a real event loop with real pipeline functions: requests are
combined and split back, each answer to its own request; a bad request fails
alone; deadlines, withdrawals and the choice of thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kbuild.runtime.answers import Callback
from kbuild.runtime.batching import Batcher
from kbuild.runtime.combine import batch_problem
from kbuild.runtime.contract.errors import ClientError, StepError
from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.contract.serve import BatchSettings, SettingsError, parse_serve
from kbuild.runtime.deadlines import RequestTimeout
from kbuild.runtime.metrics import Metrics
from kbuild.runtime.tensors import Vars


class Recorder:
    """A pipeline: y = 10 * x summed per row; records each call's rows and thread."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.threads: list[str] = []
        self.delay = delay

    def __call__(self, inputs: Vars) -> Vars | None:
        x = inputs["x"]
        self.calls.append(len(x))
        self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if (x < 0).any():
            raise StepError("check", "step 'check' (python) failed: negative")
        if (x == 0).all(axis=1).any():
            return None  # drops "the record": with several rows, the whole call
        return {"y": (x * 10).sum(axis=1)}


def rows(*values: float, width: int = 2) -> Vars:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def run(
    fn: Callable[[Vars], Vars | None],
    requests: list[Vars],
    *,
    size: int = 8,
    latency_ms: float = 0,
    timeout: float = 10.0,
    warm: int = 0,
) -> tuple[list[Any], Batcher]:
    """Submit all requests in one go (as if they arrived together) and gather
    the outcomes: outputs, None, or the exception."""

    async def main() -> tuple[list[Any], Batcher]:
        batcher = Batcher(fn, BatchSettings(size, latency_ms / 1000), Metrics("t", None))
        for _ in range(warm):
            await batcher.submit(rows(1), timeout)
        futures = [batcher.submit(r, timeout) for r in requests]
        out = await asyncio.gather(*futures, return_exceptions=True)
        batcher.close()
        return out, batcher

    return asyncio.run(main())


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    fn = Recorder()
    out, _ = run(fn, [rows(1), rows(2, 3), rows(4)])
    assert fn.calls == [4]
    assert [o["y"].tolist() for o in out] == [[20], [40, 60], [80]]


def test_max_batch_size_counts_rows_and_a_big_request_runs_alone() -> None:
    fn = Recorder()
    out, _ = run(fn, [rows(1, 1), rows(2, 2), rows(3, 3), rows(*range(1, 6)), rows(4)], size=4)
    # the head first, then whatever behind it still fits; the big one runs alone
    assert fn.calls == [4, 3, 5]
    assert [len(o["y"]) for o in out] == [2, 2, 2, 5, 1]


def test_a_bad_request_fails_alone() -> None:
    fn = Recorder()
    out, _ = run(fn, [rows(1), rows(-1), rows(2), rows(0)])
    # the combined call fails, then each request runs alone
    assert fn.calls == [4, 1, 1, 1, 1]
    assert out[0]["y"].tolist() == [20] and out[2]["y"].tolist() == [40]
    assert isinstance(out[1], StepError) and "negative" in out[1].message
    assert out[3] is None  # this one was dropped by the pipeline


def test_outputs_without_the_batch_dimension_turn_combining_off() -> None:
    def total(inputs: Vars) -> Vars:
        return {"y": np.array(inputs["x"].sum(), dtype=np.float32)}

    events: list[str] = []

    async def main() -> list[Any]:
        batcher = Batcher(total, BatchSettings(8, 0), Metrics("t", None), on_event=lambda e, **_: events.append(e))
        first = await asyncio.gather(*(batcher.submit(rows(v), 5) for v in (1, 2)))
        assert batcher.max_rows == 1
        second = await asyncio.gather(*(batcher.submit(rows(v), 5) for v in (3, 4)))
        return [float(answered(o)["y"]) for o in first + second]

    assert asyncio.run(main()) == [2.0, 4.0, 6.0, 8.0]
    assert events == ["batching-off"]


def test_a_pipeline_that_fails_only_when_combined_stops_combining() -> None:
    calls: list[int] = []

    def one_row_only(inputs: Vars) -> Vars:
        calls.append(len(inputs["x"]))
        if len(inputs["x"]) > 1:
            raise StepError("model", "step 'model' (tflite) failed: batch size must be 1")
        return {"y": inputs["x"].sum(axis=1)}

    events: list[str] = []

    async def main() -> list[Any]:
        batcher = Batcher(
            one_row_only,
            BatchSettings(8, 0),
            Metrics("t", None),
            on_event=lambda e, **_: events.append(e),
        )
        first = await asyncio.gather(*(batcher.submit(rows(v), 5) for v in (1, 2, 3)))
        second = await asyncio.gather(*(batcher.submit(rows(v), 5) for v in (4, 5)))
        return [answered(o)["y"].tolist() for o in first + second]

    assert asyncio.run(main()) == [[2], [4], [6], [8], [10]]
    assert calls == [3, 1, 1, 1, 1, 1] and events == ["batching-off"]


def test_requests_of_other_shapes_wait_for_a_call_of_their_own() -> None:
    fn = Recorder()
    out, _ = run(fn, [rows(1), rows(2, width=3), rows(3), rows(4, width=3)])
    assert fn.calls == [2, 2]
    assert [o["y"].tolist() for o in out] == [[20], [60], [60], [120]]


def test_without_batching_every_call_holds_one_request() -> None:
    fn = Recorder()
    out, _ = run(fn, [rows(1), rows(2), rows(3)], size=1)
    assert fn.calls == [1, 1, 1]
    assert [o["y"].tolist() for o in out] == [[20], [40], [60]]


def test_a_request_past_its_deadline_gets_request_timeout() -> None:
    fn = Recorder(delay=0.3)
    out, _ = run(fn, [rows(1), rows(2, width=3)], timeout=0.1)
    assert all(isinstance(o, RequestTimeout) for o in out)
    assert out[0].http_status == 504
    assert out[0].message == "no answer within the request timeout of 0.1 s"
    # the second request timed out while queued and never ran
    assert fn.calls == [1]


def test_a_withdrawn_request_never_runs() -> None:
    fn = Recorder(delay=0.05)

    async def main() -> list[Any]:
        batcher = Batcher(fn, BatchSettings(1, 0), Metrics("t", None))
        first = batcher.submit(rows(1), 5)
        second = batcher.submit(rows(2), 5)
        third = batcher.submit(rows(3), 5)
        second.cancel()
        return [answered(await first)["y"].tolist(), answered(await third)["y"].tolist()]

    assert asyncio.run(main()) == [[20], [60]]
    assert fn.calls == [1, 1]


def test_max_latency_waits_only_for_company_that_is_expected() -> None:
    async def main() -> tuple[float, float]:
        batcher = Batcher(Recorder(), BatchSettings(8, 0.3), Metrics("t", None))
        t0 = time.monotonic()
        await batcher.submit(rows(1), 5)  # a lone client: no wait
        alone = time.monotonic() - t0
        await asyncio.gather(*(batcher.submit(rows(v), 5) for v in range(1, 5)))
        t0 = time.monotonic()
        await batcher.submit(rows(1), 5)  # after a batch of 4: waits for company
        after_burst = time.monotonic() - t0
        return alone, after_burst

    alone, after_burst = asyncio.run(main())
    assert alone < 0.2 <= 0.29 <= after_burst


def test_short_calls_move_to_the_event_loop_and_long_ones_stay_on_the_thread() -> None:
    fast = Recorder()
    run(fast, [rows(1)], warm=12)
    assert fast.threads[0] == "kbuild-pipeline"
    assert fast.threads[-1] == "MainThread"
    slow = Recorder(delay=0.02)
    run(slow, [rows(1)], warm=10)
    assert set(slow.threads) == {"kbuild-pipeline"}


def test_on_the_thread_the_next_call_starts_before_the_answers_are_handed_out() -> None:
    """While the loop writes one call's answers, the model already works on
    the next call: the answers of the first call find the pipeline busy."""
    fn = Recorder(delay=0.02)  # on the thread: calls are long
    busy_when_answered: list[bool] = []

    async def main() -> None:
        batcher = Batcher(fn, BatchSettings(2, 0), Metrics("t", None))
        answers = []
        for i in range(4):
            answer = Callback()
            answer.attach(lambda outcome: busy_when_answered.append(batcher._busy))
            batcher.queue(rows(i + 1), 5, answer)
            answers.append(answer)
        while not all(a.done() for a in answers):
            await asyncio.sleep(0.01)
        batcher.close()

    asyncio.run(main())
    assert fn.calls == [2, 2] and set(fn.threads) == {"kbuild-pipeline"}
    # the first call's two answers: the second call had started; the last two: nothing left to start
    assert busy_when_answered == [True, True, False, False]


def test_batch_metrics() -> None:
    async def main() -> Metrics:
        metrics = Metrics("t", None)
        batcher = Batcher(Recorder(), BatchSettings(8, 0), metrics)
        await asyncio.gather(*(batcher.submit(rows(v), 5) for v in (1, 2, 3)))
        return metrics

    text = asyncio.run(main()).render().decode()
    assert 'kbuild_batch_requests_bucket{le="2"} 0' in text
    assert 'kbuild_batch_requests_bucket{le="4"} 1' in text
    assert "kbuild_batch_rows_sum 3" in text
    assert "kbuild_pipeline_duration_seconds_count 1" in text


def answered(outputs: Vars | None) -> Vars:
    """The outputs of a request that was answered (not dropped)."""
    assert outputs is not None, "the record was dropped"
    return outputs


def batching_of(serve: dict[str, Any], step_types: list[str] | None = None) -> BatchSettings:
    """serve.batching as the artifact reads it, compared without `asked`."""
    settings = parse_serve(serve, name="t", step_types=step_types or [], env={}).batching
    return BatchSettings(settings.max_batch_size, settings.max_latency_s)


def test_config_and_which_pipelines_can_be_batched() -> None:
    assert batching_of({"batching": {}}) == BatchSettings(32, 0.002)
    # without serve.batching: on for built-in steps only, never for user code
    assert batching_of({}, ["sklearn", "classify"]) == BatchSettings(32, 0.002)
    assert batching_of({}, ["python", "onnx"]) == BatchSettings(1, 0.0)
    assert batching_of({}, ["mlflow"]) == BatchSettings(1, 0.0)
    assert batching_of({"batching": {"max_batch_size": 1}}, ["onnx"]) == (BatchSettings(1, 0.002))
    assert batching_of({"batching": {"max_batch_size": 4, "max_latency_ms": 0}}) == (BatchSettings(4, 0.0))
    for bad in ({"max_batch_size": 0}, {"max_latency_ms": -1}, {"max_batch_size": True}):
        with pytest.raises(SettingsError):
            batching_of({"batching": bad})
    x = TensorSpec("x", "FP32", (-1, 4))
    assert batch_problem([x], [TensorSpec("y", "INT64", (-1,))]) is None
    assert batch_problem([TensorSpec("x", "FP32", (1, 4))], [x]) == ("input 'x' has no variable first dimension")
    assert batch_problem([x], [TensorSpec("y", "FP32", ())]) == ("output 'y' has no variable first dimension")
    assert not issubclass(RequestTimeout, ClientError)


def test_run_now_only_where_waiting_gains_nothing() -> None:
    fn = Recorder()

    async def main() -> None:
        batcher = Batcher(fn, BatchSettings(8, 0.002), Metrics("t", None))
        assert batcher.run_now(rows(1)) is None  # the first calls (warm-up) go to the thread
        for _ in range(8):
            await batcher.submit(rows(1), 5)
        result, seconds = batcher.run_now(rows(2, 3)) or (None, 0.0)
        assert isinstance(result, dict) and result["y"].tolist() == [40, 60] and seconds >= 0
        assert fn.threads[-1] == "MainThread" and fn.calls[-1] == 2
        queued = batcher.submit(rows(4), 5)  # queued (its dispatch not run yet): run_now must not jump it
        assert batcher.run_now(rows(5)) is None
        assert (await queued)["y"].tolist() == [80]  # type: ignore[index]
        failed, _ = batcher.run_now(rows(-1)) or (None, 0.0)
        assert isinstance(failed, StepError)  # handed back, never raised inside the batcher
        batcher._run = Recorder(delay=0.02)  # calls of milliseconds still run at once for a lone client
        assert batcher.run_now(rows(6)) is not None and batcher.run_now(rows(7)) is not None
        batcher._run = Recorder(delay=0.3)  # one long call: the next go to the thread, the loop stays free
        assert batcher.run_now(rows(8)) is not None
        assert batcher.run_now(rows(9)) is None
        batcher.close()

    asyncio.run(main())
