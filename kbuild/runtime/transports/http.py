"""HTTP/1.1 server on asyncio: connections, framing and flow control. What it
answers is in http_api.py.

serve.http: host (0.0.0.0), port (8080), max_body_bytes (64 MiB: larger bodies
get 413), timeout_ms (30000: a request not answered by then gets 504).

Errors are JSON {"error": "..."}: malformed request line or headers 400;
unknown path 404; wrong method 405; chunked body 411; body over the limit 413;
head over 64 KiB 431; HTTP/2 505. An unframeable request closes its connection
after the answer, because where the next request starts is unknown. GET
endpoints answer HEAD too. Keep-alive and pipelining are supported; a
connection's requests are answered in order, one at a time, while requests
on different connections are batched together (kbuild.runtime.batching).

Why this shape: one process, an HTTP/1.1 parser of our own (two regular
expressions for a usual head, no native dependency) and handlers that work
with callbacks rather than a task or a future per request
(kbuild.runtime.answers) leave the model's cost as what remains, and adaptive
batching (kbuild.runtime.batching) amortises that over concurrent requests.
uvloop, a second process on the same port (SO_REUSEPORT) and granian's
native HTTP server in front of the same Service were measured against this:
the first two gave no consistent gain on two cores, granian about half the
requests/s (each request crosses from its threads into the loop and back).
The numbers, with the commands that made them, are in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import cast

from kbuild.runtime.answers import Outcome
from kbuild.runtime.contract.errors import AppError
from kbuild.runtime.contract.serve import HttpSettings
from kbuild.runtime.inference import Service
from kbuild.runtime.transports import wire
from kbuild.runtime.transports.http_api import (
    HttpApi,
    Pending,
    Reply,
    error_reply,
)

# After an error that ends a connection, how long to keep discarding what the
# client still sends, so that closing does not reset the connection before the
# client has read the error.
_LINGER_S = 2.0
_PROTOCOL = ("http",)


class HttpEndpoint:
    def __init__(self, service: Service, config: HttpSettings) -> None:
        self.service = service
        self.api = HttpApi(service, config)
        self.max_body = config.max_body_bytes
        self.settings = config
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Deadlines are checked this often, not timed one by one: a timer per
        # request cost about a tenth of the throughput at 32 connections.
        shortest = min(config.header_timeout_s, config.body_timeout_s, config.idle_timeout_s)
        self._sweep_every = min(max(shortest / 4, 0.005), 1.0)
        self._idle = asyncio.Event()
        self._idle.set()
        self.description = "http"
        self.port = 0
        service.metrics.add_sampler(self._sample_in_flight)

    async def listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True, backlog=1024)
        bound = self._server.sockets[0].getsockname()
        self.port = int(bound[1])
        self.description = f"http://{host}:{self.port}"

    def _sample_in_flight(self) -> None:
        """kbuild_requests_in_flight for HTTP, counted when scraped rather than
        kept on every request: the connections waiting for an answer, and the
        scrape being answered."""
        waiting = sum(1 for c in self.connections if c._waiting is not None)
        self.service.metrics.in_flight.set(1 + waiting, _PROTOCOL)

    def _sweep(self) -> None:
        """Close the connections whose deadline passed (a slow head or body:
        408; idle: quietly)."""
        now = asyncio.get_running_loop().time()
        for conn in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            conn.timed_out()
        self._sweeper = (
            asyncio.get_running_loop().call_later(self._sweep_every, self._sweep) if self.connections else None
        )

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, let the others finish the
        request they are receiving or waiting for, and after `grace` seconds
        close the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.stop()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            for conn in list(self.connections):
                conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def _opened(self, conn: _Connection) -> bool:
        """Whether the connection may be served (the cap is not reached)."""
        if len(self.connections) >= self.settings.max_connections:
            return False
        self.connections.add(conn)
        self._idle.clear()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)
        return True

    def _closed(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._idle.set()


class _Connection(asyncio.Protocol):
    """One client connection: frames requests from the byte stream and answers
    them in order. While an answer is pending (the pipeline is working), later
    requests stay buffered; reading pauses once the buffer is large."""

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self._endpoint = endpoint
        self._metrics = endpoint.service.metrics
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: wire.RequestHead | None = None
        self._closing = False  # no more requests will be read
        self._stopping = False  # the server is shutting down
        self._waiting: Pending | None = None  # the answer being computed
        self._write_paused = False
        self._read_paused = False
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._linger: asyncio.TimerHandle | None = None
        # The header, body or idle deadline (loop time), checked by the endpoint's sweeper.
        self.deadline: float | None = None
        self._timer_for: str | None = None  # what it waits for (None: idle)
        self._timer_s = 0.0
        self._settings = endpoint.settings

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        if not self._endpoint._opened(self):
            self._metrics.answered("http", "other", "503", 0.0)
            reply = error_reply(
                503, f"too many connections (serve.http.max_connections is {self._settings.max_connections})"
            )
            self._transport.write(wire.response(reply.status, reply.body, keep_alive=False))
            self._closing = True
            self._transport.close()
            return
        self._arm(self._settings.idle_timeout_s, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        if self._waiting is not None:
            # Withdraw a queued request: nobody is left to read its answer.
            self._waiting.answer.cancel()
        self._endpoint._closed(self)

    # A client that sends requests but does not read responses must not make
    # the server buffer without bound.
    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        pause = self._write_paused or (self._waiting is not None and len(self._buf) > wire.MAX_HEAD_BYTES)
        if pause and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif not pause and self._read_paused and not self._closing:
            transport.resume_reading()
            self._read_paused = False

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        if self._waiting is not None:
            self._update_reading()
            return
        self._run()

    def eof_received(self) -> bool:
        """The client will send nothing more (a half-close): what it sent is
        still answered; the connection closes once it is. True keeps the
        transport open for the answers."""
        self._eof = True
        if self._waiting is None:
            self._run()
        return True

    def _run(self) -> None:
        try:
            self._process()
        except wire.HttpError as e:
            self._fail(e.status, e.message, e.path)
            return
        if self._waiting is not None or self._closing:
            return
        if self._eof:
            if self._buf or self._head is not None:
                self._fail(400, "the client closed its side before the request was complete")
            else:
                self._close()
            return
        # A deadline runs from the first byte of a head, and from the end of a
        # head for its body; more bytes do not move it (slow clients).
        if self._head is not None:
            if self._timer_for != "request body":
                self._arm(self._settings.body_timeout_s, "request body")
        elif self._buf:
            if self._timer_for != "request head":
                self._arm(self._settings.header_timeout_s, "request head")
        else:
            self._arm(self._settings.idle_timeout_s, None)

    # -- timeouts: one deadline a connection, moved as a request moves along

    def _arm(self, seconds: float, what: str | None) -> None:
        self.deadline = asyncio.get_running_loop().time() + seconds
        self._timer_for = what
        self._timer_s = seconds

    def _disarm(self) -> None:
        self.deadline = None
        self._timer_for = None

    def timed_out(self) -> None:
        """The deadline passed (the endpoint's sweeper saw it)."""
        what, seconds = self._timer_for, self._timer_s
        self._disarm()
        if self._closing or self._waiting is not None:
            return
        if what is None:  # idle: nothing to answer
            self._close()
        else:
            self._fail(408, f"the {what} did not arrive within {seconds:g} s")

    def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        buf = self._buf
        endpoint = self._endpoint
        while not self._closing and self._waiting is None:
            head = self._head
            if head is None:
                # RFC 9112 2.2: ignore empty lines before a request line.
                while buf.startswith(b"\r\n"):
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > wire.MAX_HEAD_BYTES:
                        raise wire.HttpError(431, "request head too large")
                    return
                if end > wire.MAX_HEAD_BYTES:
                    raise wire.HttpError(431, "request head too large")
                head = wire.parse_head(bytes(buf[:end]))
                del buf[: end + 4]
                if head.content_length > endpoint.max_body:
                    raise wire.HttpError(
                        413,
                        f"request body of {head.content_length} bytes exceeds the limit of {endpoint.max_body}",
                        head.path,
                    )
                self._head = head
                if head.expect_continue and len(buf) < head.content_length:
                    transport.write(wire.CONTINUE)
            size = head.content_length
            if len(buf) < size:
                return
            body = bytes(buf[:size])
            del buf[:size]
            self._head = None
            started = time.perf_counter()
            # While the pipeline works, the request timeout applies (_disarm, inlined).
            self.deadline = self._timer_for = None
            # One connection, with this its only request: nothing to batch with.
            alone = len(endpoint.connections) == 1
            label, result = endpoint.api.handle(head, body, alone)
            if isinstance(result, Reply):
                self._answer(head, label, started, result)
            else:
                self._waiting = result
                result.answer.attach(partial(self._settled, head, label, started))

    def _settled(
        self,
        head: wire.RequestHead,
        label: str,
        started: float,
        outcome: Outcome,
    ) -> None:
        pending = self._waiting
        self._waiting = None
        if pending is None:
            return
        if not isinstance(outcome, BaseException):
            try:
                reply = pending.finish(outcome)
            except Exception as e:  # encoding the answer failed: a bug
                reply = self._endpoint.api.internal_error(label, e)
        elif isinstance(outcome, AppError):
            reply = pending.fail(outcome) if pending.fail else error_reply(outcome.http_status, outcome.message)
        else:
            reply = self._endpoint.api.internal_error(label, outcome)
        self._answer(head, label, started, reply)
        if self._closing:
            return
        if self._read_paused:
            self._update_reading()
        if self._buf or self._eof:
            self._run()
        else:  # nothing more was sent meanwhile: the connection is idle
            self._arm(self._settings.idle_timeout_s, None)

    def _answer(self, head: wire.RequestHead, label: str, started: float, reply: Reply) -> None:
        # Written before it is counted: the client's next request is on its way meanwhile.
        seconds = time.perf_counter() - started
        transport = self._transport
        keep_alive = head.keep_alive and not self._stopping
        if transport is not None and not self._closing:
            transport.write(
                wire.response(
                    reply.status,
                    reply.body,
                    keep_alive=keep_alive,
                    content_type=reply.content_type,
                    headers=reply.headers or (),
                    head_only=head.method == "HEAD",
                )
            )
            if not keep_alive:
                self._close()
        self._metrics.answered("http", label, str(reply.status), seconds)

    def _fail(self, status: int, message: str, path: str = "") -> None:
        transport = self._transport
        assert transport is not None
        self._disarm()
        self._metrics.answered("http", "other", str(status), 0.0)
        reply = self._endpoint.api.failure(path, status, message)
        transport.write(wire.response(reply.status, reply.body, keep_alive=False))
        self._closing = True
        self._head = None
        self._buf.clear()
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(_LINGER_S, transport.close)

    def _close(self) -> None:
        self._closing = True
        self._disarm()
        if self._transport is not None:
            self._transport.close()

    def stop(self) -> None:
        """Server shutdown: close now if idle, else after the current request."""
        self._stopping = True
        if self._head is None and not self._buf and self._waiting is None:
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def start(service: Service, settings: HttpSettings) -> HttpEndpoint:
    """Listen on settings.host:settings.port; raises OSError when the address
    cannot be bound."""
    endpoint = HttpEndpoint(service, settings)
    await endpoint.listen(settings.host, settings.port)
    return endpoint
