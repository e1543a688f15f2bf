"""Kafka transport: serve.kafka streams records through the pipeline.

The stream (kbuild.runtime.streaming.stream) and, with serve.kafka.models, the
model watcher (kbuild.runtime.streaming.model_watcher) run on threads of their own;
the HTTP server beside them answers health checks and /metrics. The stream
starts once the pipeline is loaded and the newest published model replayed.
Replicas started with the same group_id share the source topic's partitions.

The signing key of model updates comes from the file named by
KBUILD_MODEL_KEY_FILE; KBUILD_KAFKA_BOOTSTRAP_SERVERS and KBUILD_KAFKA_GROUP_ID
override the pipeline's servers and group.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from kbuild.runtime.contract.errors import AppError, LoadError
from kbuild.runtime.contract.kafka import BUILT_IN_VERSION, StreamConfig
from kbuild.runtime.contract.model_message import KEY_FILE_ENV, KeyFileError, read_key
from kbuild.runtime.contract.step_types import walk
from kbuild.runtime.inference import Service
from kbuild.runtime.log import log_event
from kbuild.runtime.samples import read_samples
from kbuild.runtime.streaming.codec import codec
from kbuild.runtime.streaming.metrics import StreamMetrics
from kbuild.runtime.streaming.microbatch import BatchHandler, batch_handler, one_by_one
from kbuild.runtime.streaming.model_assembly import Verifier
from kbuild.runtime.streaming.model_watcher import ModelSlot, ModelWatcher
from kbuild.runtime.streaming.records import describe
from kbuild.runtime.streaming.stream import Stream
from kbuild.runtime.streaming.transforms import transforms_handler


class StreamFailed(AppError):
    """The stream stopped on its own: a fatal client error, or a bug."""

    exit_code = 4


class KafkaEndpoint:
    def __init__(self, stream: Stream, watcher: ModelWatcher | None, config: StreamConfig) -> None:
        self.stream = stream
        self.watcher = watcher
        self.description = f"kafka://{config.bootstrap_servers} {config.source.topic} -> {config.sink.topic}"
        # serve.py stops the server with this error when it is set.
        self.failure: asyncio.Future[AppError] = asyncio.get_running_loop().create_future()

    def failed(self, error: BaseException) -> None:
        """From the stream's thread."""
        loop = self.failure.get_loop()

        def settle() -> None:
            if not self.failure.done():
                self.failure.set_result(StreamFailed(f"kafka stream failed: {describe(error)}"))

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed: the server is gone already
            pass

    async def shutdown(self, grace: float) -> None:
        await asyncio.to_thread(self.stream.stop, grace)
        if self.watcher is not None:
            await asyncio.to_thread(self.watcher.stop, 5.0)


async def start(service: Service, settings: StreamConfig) -> KafkaEndpoint:
    log: TextIO = sys.stderr
    spec = service.spec
    app_dir = service.app_dir or Path(".")
    metrics = StreamMetrics()
    service.metrics.add_collector(metrics.collect)
    handler = _handler(service, settings, app_dir)

    watcher: ModelWatcher | None = None
    slot: ModelSlot | None = None
    models = settings.models
    if models is not None:
        key = _model_key(log, models.allow_unsigned)
        slot = ModelSlot()
        watcher = ModelWatcher(
            topic=models.topic,
            step=_model_step(walk(spec.steps), models.step),
            settings=settings.reader_settings(),
            verifier=Verifier(key, models.allow_unsigned),
            base=lambda: service.pipeline,
            samples=read_samples(app_dir),
            slot=slot,
            metrics=metrics,
            log=log,
        )
    endpoint: KafkaEndpoint | None = None

    def failed(error: BaseException) -> None:
        if endpoint is not None:
            endpoint.failed(error)

    stream = Stream(
        config=settings,
        service=service,
        handler=handler,
        metrics=metrics,
        log=log,
        slot=slot,
        replayed=watcher.replayed if watcher is not None else None,
        model_version=models.built_in_version if models is not None else BUILT_IN_VERSION,
        on_failure=failed,
    )
    endpoint = KafkaEndpoint(stream, watcher, settings)
    if watcher is not None:
        watcher.start()
    stream.start()
    return endpoint


def _handler(service: Service, settings: StreamConfig, app_dir: Path) -> BatchHandler:
    source = codec(settings.source.encoding)
    sink = codec(settings.sink.encoding)
    if settings.transforms is not None:
        # Maki Nage's functions take one event at a time.
        return one_by_one(
            transforms_handler(
                app_dir,
                settings.transforms,
                source,
                sink,
                service.spec,
                service.infer_arrays,
                lambda: service.pipeline,
            )
        )
    return batch_handler(service.spec, source, sink, service.infer_arrays)


def _model_step(steps: Sequence[Mapping[str, Any]], name: str | None) -> str:
    """The step that model updates replace: the one named, or else the one
    step with a model."""
    if name is not None:
        if not any(step.get("name") == name for step in steps):
            raise LoadError(f"serve.kafka.models.step: the pipeline has no step {name!r}")
        return name
    with_model = [str(step.get("name")) for step in steps if "model" in step]
    if len(with_model) != 1:
        raise LoadError(
            f"serve.kafka.models.step: name the step to update; the pipeline has "
            f"{len(with_model)} steps with a model ({', '.join(with_model) or 'none'})"
        )
    return with_model[0]


def _model_key(log: TextIO, allow_unsigned: bool) -> bytes | None:
    path = os.environ.get(KEY_FILE_ENV)
    if not path:
        if not allow_unsigned:
            log_event(
                log,
                "no-model-key",
                level="warning",
                message=f"{KEY_FILE_ENV} is not set: every model update will be refused",
            )
        return None
    try:
        return read_key(Path(path))
    except KeyFileError as e:
        raise LoadError(f"{KEY_FILE_ENV}: {e}") from None
