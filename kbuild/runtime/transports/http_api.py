"""What the HTTP server answers: routing and the handlers, apart from the
connection handling in http.py.

    POST /predict                      JSON object of named inputs -> named outputs
                                       (204, no body, when the pipeline drops the record)
    GET  /v2                           server metadata and extensions
    GET  /v2/health/live|ready         liveness, readiness (503 while loading or stopping)
    GET  /v2/models/M[/versions/V]     model metadata from the declared inputs and outputs
    GET  /v2/models/M[/versions/V]/ready
    POST /v2/models/M[/versions/V]/infer
                                       Open Inference Protocol inference, JSON or with the
                                       binary tensor data extension
    POST /v1/embeddings, GET /v1/models[/M]
                                       OpenAI's embeddings API, where serve.http.openai
                                       asks for it (kbuild.runtime.openai_api)
    GET  /metrics                      Prometheus text format
    GET  /openapi.json                 OpenAPI 3.1 description of all of the above

A handler answers at once (a Reply) or hands back a Pending: the answer the
pipeline will settle and a function that turns its outputs into a Reply. Errors are JSON
{"error": "..."} with the status of the AppError raised (4xx for the client's
faults); anything else is a bug and costs one 500, never the server.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from kbuild import __version__
from kbuild.runtime import oip
from kbuild.runtime.answers import Callback
from kbuild.runtime.contract.errors import AppError, ClientError
from kbuild.runtime.contract.serve import HttpSettings
from kbuild.runtime.inference import Service
from kbuild.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from kbuild.runtime.openai_api import Embeddings, Tokens, app_error_body, error_body, tokenizer_of
from kbuild.runtime.openapi import document
from kbuild.runtime.tensors import Vars, decode_inputs, dumps, encode_outputs, loads
from kbuild.runtime.transports.wire import RequestHead

JSON = "application/json"
SERVER_NAME = "kbuild"
# At most this many "internal-error" log lines a second: a bug hit by every
# request must not turn the log into the bottleneck.
_ERROR_LOGS_PER_S = 10
# How many resolved model paths to keep; names sent at random must not grow it.
_ROUTES_KEPT = 64


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] | None = None


@dataclass(slots=True)
class Pending:
    answer: Callback
    finish: Callable[[Vars | None], Reply]
    # the reply to the pipeline's error, where the endpoint shapes its own
    fail: Callable[[AppError], Reply] | None = None


# (head, body, model name, model version, alone: no other request is in flight
# on the server's connections, so an inference may run at once)
Handler = Callable[[RequestHead, bytes, str, str, bool], "Reply | Pending"]


def json_reply(status: int, obj: object) -> Reply:
    return Reply(status, dumps(obj))


def error_reply(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message})


class HttpApi:
    def __init__(self, service: Service, config: HttpSettings) -> None:
        self.service = service
        self.config = config
        self.model = oip.Model(service.spec)
        self._openapi: bytes | None = None
        self._error_window = (0, 0)  # (second, lines logged in it)
        # path -> (metrics label, {method: handler})
        self.static: dict[str, tuple[str, dict[str, Handler]]] = {
            "/predict": ("predict", {"POST": self._predict}),
            "/v2": ("server_metadata", {"GET": self._server_metadata}),
            "/v2/health/live": ("live", {"GET": self._live}),
            "/v2/health/ready": ("ready", {"GET": self._ready}),
            "/metrics": ("metrics", {"GET": self._metrics}),
            "/openapi.json": ("openapi", {"GET": self._openapi_json}),
        }
        self.model_routes: dict[str, tuple[str, dict[str, Handler]]] = {
            "": ("model_metadata", {"GET": self._model_metadata}),
            "ready": ("model_ready", {"GET": self._model_ready}),
            "infer": ("infer", {"POST": self._infer}),
        }
        # Model paths already resolved (a client sends the same few again and again).
        self._routes: dict[str, tuple[tuple[str, dict[str, Handler]], str, str]] = {}
        self.embeddings: Embeddings | None = None
        if config.openai is not None:
            path, length = tokenizer_of(service.spec, service.app_dir)
            self.embeddings = Embeddings(service.spec, config.openai, Tokens(path, length))
            self.static["/v1/embeddings"] = ("openai_embeddings", {"POST": self._openai_embeddings})
            self.static["/v1/models"] = ("openai_models", {"GET": self._openai_models})

    # -- routing

    def handle(self, head: RequestHead, body: bytes, alone: bool = False) -> tuple[str, Reply | Pending]:
        """The metrics label of the endpoint, and the answer (alone: see Handler)."""
        path = head.path
        name = version = ""
        route = self.static.get(path)
        if route is None:
            found = self._routes.get(path)
            if found is None:
                found = self._model_route(path)
                if found is None:
                    return "other", error_reply(404, f"no such path {path[:200]!r}")
                if len(self._routes) < _ROUTES_KEPT:
                    self._routes[path] = found
            route, name, version = found
        label, methods = route
        handler = methods.get("GET" if head.method == "HEAD" else head.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            reply = error_reply(405, f"{head.method} not allowed on {path} (allowed: {allowed})")
            reply.headers = [("Allow", allowed)]
            return label, reply
        try:
            return label, handler(head, body, name, version, alone)
        except AppError as e:
            return label, error_reply(e.http_status, e.message)
        except RecursionError:
            return label, error_reply(400, "request nested too deeply")
        except Exception as e:  # a bug must cost one request, not the server
            return label, self.internal_error(label, e)

    def failure(self, path: str, status: int, message: str) -> Reply:
        """The error reply for a request the connection could not take, in the shape its endpoint uses."""
        if self.embeddings is not None and path.startswith("/v1/"):
            return Reply(status, error_body(status, message))
        return error_reply(status, message)

    def _model_route(self, path: str) -> tuple[tuple[str, dict[str, Handler]], str, str] | None:
        if self.embeddings is not None and path.startswith("/v1/models/"):
            name = unquote(path[len("/v1/models/") :])
            return ("openai_model", {"GET": self._openai_model}), name, ""
        if not path.startswith("/v2/models/"):
            return None
        parts = path[len("/v2/models/") :].split("/")
        if "%" in path:
            parts = [unquote(p) for p in parts]
        version = ""
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            if not version:
                return None
            parts = [parts[0], *parts[3:]]
        if not parts[0] or len(parts) > 2:
            return None
        route = self.model_routes.get(parts[1] if len(parts) == 2 else "")
        if route is None:
            return None
        return route, parts[0], version

    def internal_error(self, label: str, error: BaseException) -> Reply:
        message = f"internal error: {type(error).__name__}: {error}"
        now = int(time.monotonic())
        second, logged = self._error_window
        if second != now:
            second, logged = now, 0
        if logged < _ERROR_LOGS_PER_S and self.service.events is not None:
            self.service.events("internal-error", level="error", endpoint=label, error=message)
        self._error_window = (second, logged + 1)
        return error_reply(500, message)

    # -- inference

    def _predict(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply | Pending:
        body = self._decoded(head, body)
        if not body:
            raise ClientError("empty request body; send a JSON object of named inputs")
        obj = _parse_json(body)
        return self._run(decode_inputs(obj, self.service.spec.inputs), alone, _predict_reply)

    def _infer(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply | Pending:
        model = self.model
        model.check(name, version)
        body = self._decoded(head, body)
        split = head.inference_header_length
        binary: bytes | memoryview
        if split is None:
            obj, binary = _parse_json(body), b""
        else:
            if split > len(body):
                raise ClientError(f"Inference-Header-Content-Length {split} exceeds the body of {len(body)} bytes")
            obj, binary = _parse_json(body[:split]), memoryview(body)[split:]
        request = oip.read_request(model, obj, binary)
        return self._run(request.inputs, alone, lambda outputs: infer_reply(model, request, outputs))

    def _run(self, inputs: Vars, alone: bool, finish: Callable[[Vars | None], Reply]) -> Reply | Pending:
        """The reply at once where a lone request ran at once (Service.run_now),
        else the pending answer of the batcher."""
        if alone:
            done, outputs = self.service.run_now(inputs)
            if done:
                return finish(outputs)
        answer = Callback()
        self.service.queue(inputs, self.config.timeout_s, answer)
        return Pending(answer, finish)

    def _decoded(self, head: RequestHead, body: bytes) -> bytes:
        encoding = head.content_encoding
        if not encoding or encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise _Unsupported(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
        inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(body, self.config.max_body_bytes + 1)
        except zlib.error as e:
            raise ClientError(f"cannot decompress the {encoding} body: {e}") from None
        if len(out) > self.config.max_body_bytes or inflater.unconsumed_tail:
            raise _TooLarge(f"decompressed body exceeds the limit of {self.config.max_body_bytes} bytes")
        return out

    # -- OpenAI's embeddings API

    def _openai_embeddings(
        self, head: RequestHead, body: bytes, name: str, version: str, alone: bool
    ) -> Reply | Pending:
        embeddings = self.embeddings
        assert embeddings is not None
        try:
            body = self._decoded(head, body)
            inputs, answer = embeddings.request(_parse_json(body), self.service.queued_rows)
        except AppError as e:
            return _openai_failed(e)
        try:
            pending = self._run(inputs, alone, lambda outputs: Reply(200, answer(outputs)))
        except AppError as e:
            return _openai_failed(e)
        if isinstance(pending, Pending):
            pending.fail = _openai_failed
        return pending

    def _openai_models(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        assert self.embeddings is not None
        return Reply(200, self.embeddings.models())

    def _openai_model(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        assert self.embeddings is not None
        try:
            return Reply(200, self.embeddings.model(name))
        except AppError as e:
            return _openai_failed(e)

    # -- metadata and health

    def _server_metadata(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        return json_reply(200, {"name": SERVER_NAME, "version": __version__, "extensions": list(oip.EXTENSIONS)})

    def _model_metadata(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        self.model.check(name, version)
        return json_reply(200, self.model.metadata())

    def _model_ready(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        self.model.check(name, version)
        if self.service.ready:
            return json_reply(200, {"name": name, "ready": True})
        return json_reply(503, {"name": name, "ready": False, "error": self._not_ready()})

    def _live(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        return json_reply(200, {"live": True})

    def _ready(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        if self.service.ready:
            return json_reply(200, {"ready": True})
        return json_reply(503, {"ready": False, "error": self._not_ready()})

    def _not_ready(self) -> str:
        return "not ready: " + ("shutting down" if self.service.stopping else "models are loading")

    def _metrics(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        metrics = self.service.metrics
        metrics.ready.set(1 if self.service.ready else 0)
        return Reply(200, metrics.render(), METRICS_CONTENT_TYPE)

    def _openapi_json(self, head: RequestHead, body: bytes, name: str, version: str, alone: bool) -> Reply:
        if self._openapi is None:
            doc = document(self.service.spec, __version__)
            self._openapi = dumps(doc)
        return Reply(200, self._openapi)


class _Unsupported(ClientError):
    http_status = 415


class _TooLarge(ClientError):
    http_status = 413


def _openai_failed(error: AppError) -> Reply:
    reply = Reply(error.http_status, app_error_body(error))
    if error.http_status == 429:
        reply.headers = [("Retry-After", "1")]
    return reply


def _parse_json(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ClientError(f"malformed JSON: {e}") from None


def _predict_reply(outputs: Vars | None) -> Reply:
    if outputs is None:
        return Reply(204, b"")
    return json_reply(200, encode_outputs(outputs))


def infer_reply(model: oip.Model, request: oip.Request, outputs: Vars | None) -> Reply:
    if outputs is None:
        # The pipeline dropped the record: an answer with no outputs.
        empty: dict[str, Any] = {"model_name": model.name, "outputs": []}
        if model.version:
            empty["model_version"] = model.version
        if request.id is not None:
            empty["id"] = request.id
        return json_reply(200, empty)
    text, chunks = oip.response_text(model, request, outputs)
    header = text.encode("ascii")
    if not chunks:
        return Reply(200, header)
    return Reply(
        200,
        b"".join([header, *chunks]),
        "application/octet-stream",
        [("Inference-Header-Content-Length", str(len(header)))],
    )
