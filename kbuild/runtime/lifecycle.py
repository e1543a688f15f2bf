"""Run the pipeline's endpoints until SIGTERM/SIGINT.

Order of events: listen (liveness answers at once), load the models in a
thread (readiness answers 503 meanwhile), ready; on a signal readiness turns
false (and, with KBUILD_DRAIN_S, the server goes on answering for that long),
listeners close, requests in progress finish, exit 0. A pipeline that
fails to load stops everything and raises LoadError: never half-alive. So does
an endpoint that fails on its own (a Kafka stream whose client hit a fatal
error): an endpoint may carry `failure`, a future whose result is the AppError
to stop with.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from kbuild.runtime.contract.errors import AppError, ArtifactUsageError, LoadError
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.contract.serve import DRAIN_ENV, SHUTDOWN_GRACE_S
from kbuild.runtime.inference import Service
from kbuild.runtime.log import log_event
from kbuild.runtime.pipeline_runner import PipelineRunner

LOAD_THREAD = "kbuild-load"


class Endpoint(Protocol):
    description: str

    async def shutdown(self, grace: float) -> None: ...


def run_server(app_dir: Path, spec: PipelineSpec, log: TextIO) -> int:
    """Serve the transports that spec.serve enables, each with its settings."""
    return asyncio.run(_serve(app_dir, spec, log))


async def _serve(app_dir: Path, spec: PipelineSpec, log: TextIO) -> int:
    drain = _drain_seconds()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    service = Service(spec, app_dir=app_dir)
    service.events = functools.partial(log_event, log)
    started: list[Endpoint] = []
    try:
        for transport in spec.serve.transports:
            started.append(await _start(transport, service, getattr(spec.serve, transport)))
    except BaseException:
        await _shutdown(started, 0)
        raise
    log_event(
        log,
        "start",
        pipeline=spec.name,
        version=spec.version,
        endpoints=[e.description for e in started],
        batching=_batching_note(service),
    )

    t0 = time.monotonic()
    loaded = _load_in_thread(loop, app_dir, spec)
    stopped = asyncio.ensure_future(_stopped(stop, started))
    waiting: list[asyncio.Future[Any]] = [loaded, stopped]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if loaded.done() and not stopped.done():
        error = loaded.exception()
        if error is not None:
            stopped.cancel()
            await _shutdown(started, 0)
            message = error.message if isinstance(error, AppError) else repr(error)
            log_event(log, "stop", level="error", pipeline=spec.name, error=message)
            raise error
        service.pipeline = loaded.result()
        # What importing and loading made (frameworks, models) lives as long as
        # the process: out of the collector's sight, a full collection no
        # longer walks it, which took a third of the CPU time of a record on a
        # Kafka stream (bench/streaming.py).
        gc.freeze()
        load_s = time.monotonic() - t0
        service.metrics.load_time.set(load_s)
        log_event(log, "ready", pipeline=spec.name, load_s=round(load_s, 3))
        await stopped

    failure = stopped.result() if stopped.done() else None
    service.stopping = True
    if failure is None and drain > 0:
        await _drain(loop, drain)
    await _shutdown(started, SHUTDOWN_GRACE_S)
    service.close()
    if failure is not None:
        log_event(log, "stop", level="error", pipeline=spec.name, error=failure.message)
        raise failure
    log_event(log, "stop", pipeline=spec.name, reason="signal")
    return 0


async def _stopped(stop: asyncio.Event, started: list[Endpoint]) -> AppError | None:
    """Until a signal (None) or the failure of an endpoint (its error)."""
    failures: list[asyncio.Future[AppError]] = [f for e in started if (f := getattr(e, "failure", None)) is not None]
    signalled = asyncio.ensure_future(stop.wait())
    waiting: list[asyncio.Future[Any]] = [signalled, *failures]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    return next((f.result() for f in failures if f.done()), None)


def _drain_seconds() -> float:
    value = os.environ.get(DRAIN_ENV, "")
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 3600:
        raise ArtifactUsageError(f"{DRAIN_ENV}={value!r} must be a number of seconds >= 0")
    return seconds


async def _drain(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """After SIGTERM: answer as usual, but report not ready, until load
    balancers have seen it; a second signal ends the wait."""
    hurry = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hurry.set)
    try:
        await asyncio.wait_for(hurry.wait(), seconds)
    except TimeoutError:
        pass


def _batching_note(service: Service) -> dict[str, Any] | str:
    config = service.batching
    if config.max_batch_size == 1:
        return "off"
    if service.batching_off is not None:
        return f"off: {service.batching_off}"
    note: dict[str, Any] = {
        "max_batch_size": config.max_batch_size,
        "max_latency_ms": config.max_latency_s * 1000,
    }
    if not config.asked:
        note["default"] = "built-in steps only"
    return note


async def _start(transport: str, service: Service, settings: Any) -> Endpoint:
    module_name = f"kbuild.runtime.transports.{transport}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise LoadError(f"serve.{transport} needs the Python module {e.name!r}, which is not installed") from e
        raise LoadError(f"serve.{transport}: this artifact has no {transport} server ({module_name})") from None
    try:
        endpoint: Endpoint = await module.start(service, settings)
    except OSError as e:
        where = f"{getattr(settings, 'host', '')}:{getattr(settings, 'port', '')}".strip(":")
        raise LoadError(
            f"{transport}: cannot listen on {where or 'the configured address'}: {e.strerror or e}"
        ) from None
    return endpoint


async def _shutdown(started: list[Endpoint], grace: float) -> None:
    await asyncio.gather(*(e.shutdown(grace) for e in started))


def _load_in_thread(
    loop: asyncio.AbstractEventLoop, app_dir: Path, spec: PipelineSpec
) -> asyncio.Future[PipelineRunner]:
    """Load on a daemon thread, so a SIGTERM during a long load exits at once
    (an executor thread would be joined at exit)."""
    future: asyncio.Future[PipelineRunner] = loop.create_future()

    def settle(result: PipelineRunner | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def work() -> None:
        try:
            pipeline, error = PipelineRunner.load(app_dir, spec), None
        except BaseException as e:  # reported through the future
            pipeline, error = None, e
        try:
            loop.call_soon_threadsafe(settle, pipeline, error)
        except RuntimeError:  # the loop closed: we were stopped while loading
            pass

    threading.Thread(target=work, name=LOAD_THREAD, daemon=True).start()
    return future


def loading() -> bool:
    """Whether a model is still loading on its thread (a SIGTERM came during the load)."""
    return any(t.name == LOAD_THREAD and t.is_alive() for t in threading.enumerate())
