"""The request -> pipeline -> response path shared by every server.

A transport (HTTP, gRPC, Kafka) parses its framing, hands the JSON-like object
of named inputs to Service.infer() and maps AppError.http_status (or its own
equivalent) to its error reply; nothing here knows about any transport.
"""

from __future__ import annotations

from typing import Any

from kbuild.runtime.errors import NotReady
from kbuild.runtime.pipeline import Pipeline, PipelineSpec
from kbuild.runtime.tensors import Vars, decode_inputs, encode_outputs


class Service:
    def __init__(self, spec: PipelineSpec, pipeline: Pipeline | None = None) -> None:
        self.spec = spec
        self.pipeline = pipeline
        # Set on SIGTERM: readiness turns false so load balancers stop sending,
        # while requests already on the way are still answered.
        self.stopping = False

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and not self.stopping

    def infer(self, obj: object) -> dict[str, Any] | None:
        """JSON-like named inputs -> JSON-able named outputs, or None when the
        pipeline dropped the record. Raises ClientError (bad inputs), NotReady,
        StepError / PipelineError (a failure inside the pipeline)."""
        pipeline = self._pipeline()
        outputs = pipeline.run(decode_inputs(obj, self.spec.inputs))
        return None if outputs is None else encode_outputs(outputs)

    def infer_arrays(self, inputs: Vars) -> Vars | None:
        """For transports that carry typed tensors (binary OIP, gRPC): the
        caller has already validated the inputs."""
        return self._pipeline().run(inputs)

    def _pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise NotReady("not ready: models are loading")
        return self.pipeline
