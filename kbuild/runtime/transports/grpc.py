"""gRPC server: the Open Inference Protocol's inference.GRPCInferenceService
(ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
ModelInfer) on grpc.aio, in the same event loop as the HTTP server, sharing
its pipeline queue and batches.

serve.grpc: host (0.0.0.0), port (8081), max_message_bytes (64 MiB: larger
messages get RESOURCE_EXHAUSTED), timeout_ms (30000, or the client's deadline
when sooner: DEADLINE_EXCEEDED).

ModelInfer takes typed contents (InferTensorContents, one field per
datatype) or raw_input_contents (one entry per input, little-endian, BYTES
elements length-prefixed), and answers in the same form: raw_output_contents
when the request used raw inputs (as Triton's clients send), typed contents
otherwise. Errors map the runtime's statuses onto gRPC codes: 400
INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, any
other failure INTERNAL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]

from kbuild import __version__
from kbuild.runtime import oip
from kbuild.runtime.contract.errors import AppError, ClientError, short
from kbuild.runtime.contract.serve import GrpcSettings
from kbuild.runtime.inference import Service
from kbuild.runtime.tensors import Array, Vars
from kbuild.runtime.transports.oip_proto import PACKAGE, RPCS, SERVICE

SERVER_NAME = "kbuild"
_PROTOCOL = ("grpc",)

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# InferTensorContents field of each datatype; FP16 has none (raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Handler = Callable[[Any, Any], Awaitable[Any]]


class GrpcEndpoint:
    def __init__(self, service: Service, timeout: float) -> None:
        self.service = service
        self.model = oip.Model(service.spec)
        self.timeout = timeout
        self.description = "grpc"
        self.port = 0
        self._server: Any = None

    async def listen(self, host: str, port: int, max_message: int) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # Without this a second server could bind the same port and
                # silently take half the traffic.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio >= 1.53 raises where older ones returned 0
            raise OSError(f"{e}") from None
        if not bound:
            raise OSError("address in use or unavailable")
        await server.start()
        self._server = server
        self.port = int(bound)
        self.description = f"grpc://{host}:{self.port}"

    async def shutdown(self, grace: float) -> None:
        """Refuse new calls, let calls in progress finish for up to `grace`
        seconds, then cancel the rest."""
        if self._server is not None:
            await self._server.stop(grace)

    def _handlers(self) -> Any:
        methods: dict[str, Handler] = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ModelReady": self._model_ready,
            "ServerMetadata": self._server_metadata,
            "ModelMetadata": self._model_metadata,
            "ModelInfer": self._model_infer,
        }
        # Requests arrive as bytes and are parsed in the call, so that bytes
        # that are no protobuf message get INVALID_ARGUMENT, not grpc's UNKNOWN.
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._instrumented(name, fn),
                request_deserializer=None,
                response_serializer=RPCS[name].response.SerializeToString,
            )
            for name, fn in methods.items()
        }
        return grpc.method_handlers_generic_handler(f"{PACKAGE}.{SERVICE}", handlers)

    def _instrumented(self, name: str, fn: Handler) -> Handler:
        """Metrics, and AppError -> status code; a bug costs one call."""
        metrics = self.service.metrics
        events = self.service

        parse = RPCS[name].request.FromString

        async def call(raw: bytes, context: Any) -> Any:
            started = time.perf_counter()
            metrics.in_flight.add(1, _PROTOCOL)
            code = grpc.StatusCode.OK
            message = ""
            try:
                try:
                    request = parse(raw)
                except Exception as e:  # protobuf's DecodeError, and whatever else bad bytes raise
                    raise ClientError(f"the request is not a valid {name}Request message: {e}") from None
                return await fn(request, context)
            except AppError as e:
                client = 400 <= e.http_status < 500
                code = _CODES.get(
                    e.http_status, grpc.StatusCode.INVALID_ARGUMENT if client else grpc.StatusCode.INTERNAL
                )
                message = e.message
            except RecursionError:
                code, message = grpc.StatusCode.INVALID_ARGUMENT, "request nested too deeply"
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # a bug must cost one call, not the server
                code = grpc.StatusCode.INTERNAL
                message = f"internal error: {type(e).__name__}: {e}"
                if events.events is not None:
                    events.events("internal-error", level="error", endpoint=name, error=message)
            finally:
                metrics.in_flight.add(-1, _PROTOCOL)
                metrics.answered("grpc", name, code.name, time.perf_counter() - started)
            # grpc carries the message in a header: a long one would replace
            # the error with RESOURCE_EXHAUSTED
            await context.abort(code, short(message, 1000))

        return call

    # -- health and metadata

    async def _server_live(self, request: Any, context: Any) -> Any:
        return RPCS["ServerLive"].response(live=True)

    async def _server_ready(self, request: Any, context: Any) -> Any:
        return RPCS["ServerReady"].response(ready=self.service.ready)

    async def _model_ready(self, request: Any, context: Any) -> Any:
        self.model.check(request.name, request.version)
        return RPCS["ModelReady"].response(ready=self.service.ready)

    async def _server_metadata(self, request: Any, context: Any) -> Any:
        return RPCS["ServerMetadata"].response(name=SERVER_NAME, version=__version__, extensions=list(oip.EXTENSIONS))

    async def _model_metadata(self, request: Any, context: Any) -> Any:
        model = self.model
        model.check(request.name, request.version)
        meta = model.metadata()
        response = RPCS["ModelMetadata"].response(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for key in ("inputs", "outputs"):
            for tensor in meta[key]:
                getattr(response, key).add(**tensor)
        return response

    # -- inference

    async def _model_infer(self, request: Any, context: Any) -> Any:
        model = self.model
        model.check(request.model_name, request.model_version)
        raw = request.raw_input_contents
        inputs = _inputs(model, request)
        names = model.requested([o.name for o in request.outputs]) or model.output_names
        timeout = self.timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining))
        future = self.service.submit(inputs, timeout)
        try:
            outputs = await future
        except asyncio.CancelledError:
            future.cancel()  # the client gave up: withdraw the request
            raise
        response = RPCS["ModelInfer"].response(model_name=model.name, model_version=model.version)
        if request.id:
            response.id = request.id
        if outputs is None:  # the pipeline dropped the record: no outputs
            return response
        use_raw = bool(raw) or any(model.outputs[n].datatype == "FP16" for n in names)
        for name in names:
            arr = outputs[name]
            datatype = model.outputs[name].datatype
            tensor = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
            if use_raw:
                response.raw_output_contents.append(oip.raw_bytes(datatype, arr))
            else:
                _fill_contents(tensor.contents, datatype, arr)
        return response


def _inputs(model: oip.Model, request: Any) -> Vars:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ClientError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: Vars = {}
    for i, tensor in enumerate(request.inputs):
        spec = model.spec_of(tensor.name)
        if spec.name in inputs:
            raise ClientError(f"input {spec.name!r} is given twice")
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise ClientError(f"input '{spec.name}': give contents or raw_input_contents, not both")
            inputs[spec.name] = oip.tensor_from_raw(spec, tensor.datatype, shape, raw[i])
        else:
            inputs[spec.name] = oip.tensor(spec, tensor.datatype, shape, _contents(spec.name, tensor))
    return model.complete(inputs)


def _contents(name: str, tensor: Any) -> list[Any]:
    field = CONTENTS_FIELD.get(tensor.datatype)
    contents = tensor.contents
    if field is None:
        if tensor.datatype == "FP16":
            raise ClientError(f"input '{name}': FP16 data must come in raw_input_contents")
        return []  # the datatype check reports it
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise ClientError(f"input '{name}': {tensor.datatype} data goes in contents.{field}, not contents.{others[0]}")
    return list(getattr(contents, field))


def _fill_contents(contents: Any, datatype: str, arr: Array) -> None:
    flat = arr.reshape(-1)
    target = getattr(contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        target.extend(x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in flat)
    else:
        target.extend(flat.tolist())


async def start(service: Service, settings: GrpcSettings) -> GrpcEndpoint:
    """Listen on settings.host:settings.port; raises OSError when the address
    cannot be bound."""
    endpoint = GrpcEndpoint(service, settings.timeout_s)
    await endpoint.listen(settings.host, settings.port, settings.max_message_bytes)
    return endpoint
