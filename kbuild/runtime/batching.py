"""Run the pipeline for every transport: one call at a time, combining
concurrent requests into one call when the pipeline allows it.

Requests arrive as validated named arrays. They queue; whenever the pipeline is
free, the queue's head and every compatible request behind it (same trailing
shapes, rows up to serve.batching.max_batch_size) are concatenated along the
first dimension, run as one call and split back, each answer to its own
request. Without serve.batching every call holds one request.

The batch size adapts to the load without a fixed wait: requests that arrive
while a call runs form the next batch. max_latency_ms only bounds how long an
idle pipeline waits for a batch to grow back to the size of the previous one,
so a lone client (previous batch: one request) never waits, and after a burst
the first requests wait at most max_latency_ms for their company.

One bad request never fails the others: a combined call that raises, drops
its records (returns None) or returns outputs without the batch dimension is
re-run one request at a time, so only the culprit gets the error. When every
request of a failed combined call succeeds alone, or outputs lack the batch
dimension, the pipeline cannot be batched and combining stops for good.

Pipelines made only of built-in step types batch without being asked: their
output rows depend only on the matching input rows, so sharing a call changes
no answer. User code (python, mlflow steps) may look across rows; such
pipelines batch only when serve.batching asks for it.

Where a call runs is chosen by measurement. Slow calls run on one daemon
thread: the loop keeps framing requests (which form the next batch), answering
health checks, metrics and timeouts while a model works, and a call that
hangs cannot stop the process from exiting; when a call ends there, the
next one starts before the loop hands out the answers, so the model does not
wait for that. Calls that take well under a
millisecond run on the event loop itself, where they are cheaper than the
two thread wake-ups of a hand-over. The first calls, and any call after one
that took long, go to the thread.

Every request has a deadline (kbuild.runtime.deadlines); when it passes, the
request fails with RequestTimeout (504) whether it is still queued or its
call is still running on the thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from kbuild.runtime.answers import Answer, Outcome
from kbuild.runtime.combine import split_rows, stack_rows
from kbuild.runtime.contract.serve import BatchSettings
from kbuild.runtime.deadlines import Deadlines
from kbuild.runtime.metrics import Metrics
from kbuild.runtime.pipeline_thread import PipelineThread
from kbuild.runtime.tensors import Vars

# Calls shorter than this on average run on the event loop itself: handing
# them to the pipeline thread and back costs two thread wake-ups, more than
# such calls keep the loop busy, and a GIL-bound model gains nothing from the
# thread. Measured on the 2-core machine with the scikit-learn iris model
# (0.2 ms a call): p50 at 1 connection ~0.33 ms on the loop against ~0.41 ms
# through the thread; at 32 connections ~17k against ~13k requests/s.
_INLINE_MAX_AVG_S = 0.001
# One call this long sends the following calls to the thread at once.
_INLINE_MAX_CALL_S = 0.01
# The first calls (model warm-up) always run on the thread.
_INLINE_AFTER_CALLS = 8
# A request with no company (Batcher.run_now) runs on the loop while calls
# average under this and the last one took less than the second bound: a text
# or image model of milliseconds answers a lone client without the two thread
# wake-ups, and a slow or hanging model still leaves the loop free.
_ALONE_MAX_AVG_S = 0.05
_ALONE_MAX_CALL_S = 0.2
_EWMA_WEIGHT = 0.1
# A scan for compatible requests stops after passing over this many that do
# not fit, so a backlog of odd shapes cannot make each dispatch quadratic.
_SCAN_LIMIT = 64

RunFn = Callable[[Vars], Vars | None]


class _Retry:
    """The requests of a failed combined call, re-run one by one."""

    __slots__ = ("left", "failed")

    def __init__(self, left: int) -> None:
        self.left = left
        self.failed = 0


class _Job:
    __slots__ = ("inputs", "rows", "key", "answer", "queued_at", "solo", "retry")

    def __init__(
        self,
        inputs: Vars,
        rows: int,
        key: object,
        answer: Answer,
        queued_at: float,
        solo: bool,
    ) -> None:
        self.inputs: Vars | None = inputs
        self.rows = rows
        self.key = key
        self.answer = answer
        self.queued_at = queued_at
        self.solo = solo
        self.retry: _Retry | None = None


# (outputs or None, or the exception raised) and the call's duration
Timed = tuple[Outcome, float]


class Batcher:
    def __init__(
        self,
        run: RunFn,
        config: BatchSettings,
        metrics: Metrics,
        *,
        combine: bool = True,
        on_event: Callable[..., None] | None = None,
    ) -> None:
        """run(inputs) is called on the pipeline thread, or on the event loop
        while calls are short. combine=False keeps every call to one request
        (the pipeline cannot be batched)."""
        self._run = run
        self._max_rows = config.max_batch_size if combine else 1
        self._max_latency = config.max_latency_s
        self._metrics = metrics
        self._on_event = on_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: PipelineThread[Timed] | None = None
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._busy = False  # a pipeline call is running
        self._scheduled = False
        self._fill_timer: asyncio.TimerHandle | None = None
        self._last_rows = 1
        self._inline = False
        self._avg_call: float | None = None
        self._last_call = 0.0
        self._calls = 0
        self._deadlines: Deadlines | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def max_rows(self) -> int:
        return self._max_rows

    def submit(self, inputs: Vars, timeout: float) -> asyncio.Future[Vars | None]:
        """Queue validated inputs; the future resolves to the outputs (None:
        the record was dropped) or fails with the pipeline's error or
        RequestTimeout. Cancelling the future withdraws the request."""
        future: asyncio.Future[Vars | None] = asyncio.get_running_loop().create_future()
        self.queue(inputs, timeout, future)
        return future

    def queue(self, inputs: Vars, timeout: float, answer: Answer) -> None:
        """Queue validated inputs, to be answered through `answer` (see
        submit); an answer that is done before its turn is skipped."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._worker = PipelineThread(loop)
            self._deadlines = Deadlines(loop)
        now = loop.time()
        rows, key, solo = _shape_key(inputs)
        self._queue.append(_Job(inputs, rows, key, answer, now, solo or rows > self._max_rows))
        self._queued_rows += rows
        assert self._deadlines is not None
        self._deadlines.track(answer, now + timeout, timeout)
        if not self._busy and not self._scheduled:
            if self._fill_timer is None or self._queued_rows >= self._target_rows():
                self._scheduled = True
                loop.call_soon(self._dispatch)

    def run_now(self, inputs: Vars) -> Timed | None:
        """Run one request at once, on the caller's stack, where waiting could
        gain nothing: the caller knows it has no concurrent requests (one
        connection), the pipeline is idle and nothing is queued or waiting for
        company, so a request run here could not be combined with any. Saves
        the loop iteration of the dispatch (and, for a future, that of its
        callback) and, for calls of milliseconds, the two thread
        wake-ups of the pipeline thread. Calls that take long (a model of
        seconds, one that hangs) still go to the thread, where the loop keeps
        answering health checks. None: not now; submit it."""
        if (
            self._busy
            or self._queue
            or self._fill_timer is not None
            or self._calls < _INLINE_AFTER_CALLS
            or self._avg_call is None
            or self._avg_call > _ALONE_MAX_AVG_S
            or self._last_call > _ALONE_MAX_CALL_S
        ):
            return None
        rows, _, _ = _shape_key(inputs)
        self._busy = True
        try:
            outcome = self._call(inputs)
        finally:
            self._busy = False
        self._metrics.batch(1, rows, outcome[1])
        self._last_rows = rows
        self._choose_thread(outcome[1])
        return outcome

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        if self._fill_timer is not None:
            self._fill_timer.cancel()
        if self._deadlines is not None:
            self._deadlines.close()

    # -- dispatch

    def _target_rows(self) -> int:
        return min(self._max_rows, self._last_rows)

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
        if self._busy:
            return
        q = self._queue
        while q and q[0].answer.done():  # timed out or withdrawn while queued
            self._queued_rows -= q.popleft().rows
        if not q:
            return
        loop = self._loop
        assert loop is not None and self._worker is not None
        head = q[0]
        if (
            self._max_latency > 0
            and not head.solo
            and self._queued_rows < self._target_rows()
            and loop.time() < head.queued_at + self._max_latency
        ):
            self._fill_timer = loop.call_at(head.queued_at + self._max_latency, self._dispatch)
            return
        jobs = self._take()
        rows = sum(j.rows for j in jobs)
        # A queued job holds its inputs until it is answered.
        parts = [j.inputs for j in jobs if j.inputs is not None]
        assert len(parts) == len(jobs)
        batch = parts[0] if len(parts) == 1 else stack_rows(parts)
        self._busy = True
        if self._inline:
            self._finish(jobs, rows, self._call(batch))
        else:
            self._worker.submit(self._call, batch, lambda outcome: self._finish(jobs, rows, outcome))

    def _take(self) -> list[_Job]:
        q = self._queue
        head = q.popleft()
        self._queued_rows -= head.rows
        jobs = [head]
        if head.solo or self._max_rows == 1:
            return jobs
        rows = head.rows
        kept: list[_Job] = []
        while q and rows < self._max_rows and len(kept) < _SCAN_LIMIT:
            job = q.popleft()
            self._queued_rows -= job.rows
            if job.answer.done():
                continue
            if not job.solo and job.key == head.key and rows + job.rows <= self._max_rows:
                jobs.append(job)
                rows += job.rows
            else:
                kept.append(job)
        for job in reversed(kept):
            q.appendleft(job)
            self._queued_rows += job.rows
        return jobs

    def _call(self, batch: Vars) -> Timed:
        t0 = time.perf_counter()
        try:
            result: Outcome = self._run(batch)
        except BaseException as e:  # handed to the requests, never lost
            result = e
        return result, time.perf_counter() - t0

    def _finish(self, jobs: list[_Job], rows: int, outcome: Timed) -> None:
        self._busy = False
        result, seconds = outcome
        self._metrics.batch(len(jobs), rows, seconds)
        self._last_rows = rows
        self._choose_thread(seconds)
        if len(jobs) == 1:
            job = jobs[0]
            job.inputs = None
            if job.retry is not None:
                self._retried(job.retry, failed=isinstance(result, BaseException))
            self._next()
            if not job.answer.done():
                if isinstance(result, BaseException):
                    job.answer.set_exception(result)
                else:
                    job.answer.set_result(result)
        elif isinstance(result, BaseException):
            self._retry_alone(jobs, _Retry(len(jobs)))
        elif result is None:
            self._retry_alone(jobs, None)
        else:
            parts = split_rows(result, [j.rows for j in jobs])
            if parts is None:
                self._stop_combining("an output lacks the batch dimension of the inputs")
                self._retry_alone(jobs, None)
            else:
                self._next()
                for job, part in zip(jobs, parts, strict=True):
                    job.inputs = None
                    if not job.answer.done():
                        job.answer.set_result(part)
        self._next()

    def _next(self) -> None:
        """Start the next call, if any is queued. On the pipeline thread it
        starts at once, before this call's requests are answered: the model
        works while the loop writes the answers. On the loop it runs after
        them, in a later iteration."""
        if not self._queue or self._scheduled or self._busy:
            return
        if self._inline:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._dispatch)
        else:
            self._dispatch()

    def _choose_thread(self, seconds: float) -> None:
        """Run on the event loop while calls are short, on the pipeline thread
        once they are not (see the module's docstring)."""
        self._last_call = seconds
        avg = self._avg_call
        avg = seconds if avg is None else avg + (seconds - avg) * _EWMA_WEIGHT
        self._avg_call = avg
        self._calls += 1
        if seconds > _INLINE_MAX_CALL_S or avg > _INLINE_MAX_AVG_S:
            self._inline = False
        elif self._calls >= _INLINE_AFTER_CALLS:
            self._inline = True

    def _retry_alone(self, jobs: list[_Job], retry: _Retry | None) -> None:
        for job in reversed(jobs):
            if not job.answer.done():
                job.solo = True
                job.retry = retry
                self._queue.appendleft(job)
                self._queued_rows += job.rows
            elif retry is not None:
                retry.left -= 1  # no verdict from this one

    def _retried(self, retry: _Retry, failed: bool) -> None:
        retry.left -= 1
        retry.failed += failed
        if retry.left == 0 and retry.failed == 0:
            self._stop_combining("a combined call failed where each of its requests succeeded alone")

    def _stop_combining(self, reason: str) -> None:
        if self._max_rows > 1:
            self._max_rows = 1
            if self._on_event is not None:
                self._on_event("batching-off", level="warning", reason=reason)


def _shape_key(inputs: Vars) -> tuple[int, object, bool]:
    """Rows, a key that equal-shaped requests share, and whether the request
    must run alone (inputs of different lengths or a 0-d input)."""
    if len(inputs) == 1:  # the usual case, in fewer steps
        for arr in inputs.values():
            if arr.ndim == 0:
                return 1, None, True
            rows = arr.shape[0]
            return max(rows, 1), arr.shape[1:], rows <= 0
    rows = -1
    trailing = []
    for arr in inputs.values():
        if arr.ndim == 0:
            return 1, None, True
        if rows == -1:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return max(rows, 1), None, True
        trailing.append(arr.shape[1:])
    return max(rows, 1), tuple(trailing), rows <= 0
