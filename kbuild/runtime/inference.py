"""The request -> pipeline -> response path shared by every server.

A transport (HTTP, gRPC, Kafka) parses its framing, hands the JSON-like object
of named inputs to Service.infer() and maps AppError.http_status (or its own
equivalent) to its error reply; nothing here knows about any transport.

Servers on the event loop use Service.submit() with validated arrays instead:
it queues them for the pipeline thread, which batches concurrent requests when
serve.batching allows (kbuild.runtime.batching). Every pipeline call, from any
path, holds one lock: model objects need not be thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbuild.runtime.answers import Answer
from kbuild.runtime.batching import Batcher
from kbuild.runtime.combine import batch_problem
from kbuild.runtime.contract.errors import NotReady
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.metrics import Metrics
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.tensors import Vars, decode_inputs, encode_outputs


class Service:
    def __init__(self, spec: PipelineSpec, pipeline: PipelineRunner | None = None, app_dir: Path | None = None) -> None:
        self.spec = spec
        self.pipeline = pipeline
        # The artifact's app folder, for transports that read more of it
        # (Kafka: the samples a new model must pass, user transform code).
        self.app_dir = app_dir
        # Set on SIGTERM: readiness turns false so load balancers stop sending,
        # while requests already on the way are still answered.
        self.stopping = False
        self.metrics = Metrics(spec.name, spec.version)
        self.batching = spec.serve.batching
        # Why requests cannot be combined (None: they can).
        self.batching_off = batch_problem(spec.inputs, spec.outputs)
        # log_event-like callback for events worth a log line (set by serve).
        self.events: Callable[..., None] | None = None
        self._lock = threading.Lock()
        self._batcher: Batcher | None = None
        # Transports that can be cut off (an MQTT broker gone) add what they
        # need to be ready; readiness is false until every one holds.
        self.ready_checks: list[Callable[[], bool]] = []

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and not self.stopping and all(check() for check in self.ready_checks)

    def infer(self, obj: object) -> dict[str, Any] | None:
        """JSON-like named inputs -> JSON-able named outputs, or None when the
        pipeline dropped the record. Raises ClientError (bad inputs), NotReady,
        StepError / PipelineError (a failure inside the pipeline)."""
        outputs = self._run(decode_inputs(obj, self.spec.inputs))
        return None if outputs is None else encode_outputs(outputs)

    def infer_arrays(self, inputs: Vars) -> Vars | None:
        """For transports that carry typed tensors (binary OIP, gRPC): the
        caller has already validated the inputs."""
        return self._run(inputs)

    def submit(self, inputs: Vars, timeout: float) -> asyncio.Future[Vars | None]:
        """Validated inputs -> a future of the outputs (None: dropped), from the
        event loop. Raises NotReady at once; the future fails with the
        pipeline's error or, after `timeout` seconds, RequestTimeout."""
        return self._batcher_for_loop().submit(inputs, timeout)

    def queue(self, inputs: Vars, timeout: float, answer: Answer) -> None:
        """As submit, answered through `answer` instead of a new future."""
        self._batcher_for_loop().queue(inputs, timeout, answer)

    def run_now(self, inputs: Vars) -> tuple[bool, Vars | None]:
        """For a transport with no other request in flight anywhere on it:
        (True, outputs) when the batcher ran the request at once on the
        caller's stack (Batcher.run_now), (False, None) when it must be
        submitted. Raises the pipeline's error, as the future would."""
        self._pipeline()
        if self._batcher is None:
            return False, None
        outcome = self._batcher.run_now(inputs)
        if outcome is None:
            return False, None
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return True, result

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the pipeline."""
        return 0 if self._batcher is None else self._batcher.queued_rows

    def _batcher_for_loop(self) -> Batcher:
        """The batcher, made on first use; raises NotReady while loading."""
        self._pipeline()
        if self._batcher is None:
            self._batcher = Batcher(
                self._run,
                self.batching,
                self.metrics,
                combine=self.batching_off is None,
                on_event=self.events,
            )
        return self._batcher

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def _run(self, inputs: Vars) -> Vars | None:
        pipeline = self._pipeline()
        with self._lock:
            return pipeline.run(inputs)

    def _pipeline(self) -> PipelineRunner:
        if self.pipeline is None:
            raise NotReady("not ready: models are loading")
        return self.pipeline
